"""What every sampler shares: the per-sequence state, the target's tensors, drafting, and stats."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..aggregators import plausible
from ..distributions import sample, temper
from ..policy_table import TargetRows
from ..scoring import MultiPolicyScorer, PolicyGroup

__all__ = [
    "Advance",
    "Batch",
    "SamplerConfig",
    "Sequence",
    "SequenceStats",
    "draft",
    "finite_or_none",
    "gather_tokens",
    "prompt_rng",
]


@dataclass
class SamplerConfig:
    """Knobs of the samplers. Defaults are the ones the SPEC-oracle tests state TV bounds for."""

    chunk_size: int = 4  # k: tokens drafted per round (speculative, scr)
    window: int = 32  # scr: sliding window of observed log-weights per prefix length
    margin: float = 0.0  # scr: log M_t = window quantile + margin (nats)
    quantile: float = 1.0  # scr: which quantile of the window is the bound (1.0: its maximum)
    pilot: int = 32  # scr: drafts scored in one batch to seed an empty window
    salvage: bool = True  # scr: keep the longest accepted prefix of a rejected chunk
    threshold: float | None = None  # scr: fixed log-bound log M for every prefix length (exact mode)
    max_rejections: int = 16  # scr: consecutive empty rounds before one fused token is emitted
    candidates: int = 1  # scr: chunks drafted and validated together per round
    adaptive_chunk: bool = False  # speculative, scr: per-sequence k, +2 after a fully kept draft, else -1
    max_chunk_size: int = 16  # adaptive_chunk: the largest k a sequence may grow to

    def validate(self) -> None:
        for name in ("chunk_size", "window", "pilot", "max_rejections", "candidates", "max_chunk_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.margin, (int, float)) or not (self.margin == self.margin) or self.margin < 0:
            raise ValueError(f"margin must be a number >= 0, got {self.margin!r}")
        q = self.quantile
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not (0 < q <= 1):
            raise ValueError(f"quantile must be a number in (0, 1], got {q!r}")
        if not isinstance(self.adaptive_chunk, bool):
            raise ValueError(f"adaptive_chunk must be True or False, got {self.adaptive_chunk!r}")
        if self.adaptive_chunk and self.max_chunk_size < self.chunk_size:
            raise ValueError(
                f"max_chunk_size ({self.max_chunk_size}) must be >= chunk_size ({self.chunk_size}), "
                "the length adaptive chunks start from"
            )
        if self.threshold is not None and not (
            isinstance(self.threshold, (int, float)) and abs(self.threshold) < float("inf")
        ):
            raise ValueError(f"threshold must be a finite log-bound, got {self.threshold!r}")


def finite_or_none(x):
    """x, or None where x is a non-finite float (JSON has no NaN or infinity)."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


@dataclass
class SequenceStats:
    new_tokens: int = 0
    drafted_tokens: int = 0  # tokens proposed by the draft policy in real rounds
    accepted_tokens: int = 0  # drafted tokens that were kept
    pilot_tokens: int = 0  # scr: tokens drafted only to seed the threshold window
    rounds: int = 0  # drafts judged (tokens for fused, chunks otherwise)
    rejections: int = 0  # scr: drafts that appended nothing
    clips: int = 0  # scr: drafts where an a_t the decision used exceeded log M_t
    fallbacks: int = 0  # scr: fused tokens emitted after max_rejections empty drafts
    # The two counts below are BATCH TOTALS: forward passes are shared by every sequence generated in
    # the same batch, so each sequence reports its batch's passes (GenerateOutput.batches has them once).
    forward_passes: dict = field(default_factory=dict)  # policy label -> batched forwards of its batch
    model_calls: int = 0  # model forward invocations of its batch (a batched pass counts once)
    wall_time_s: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else float("nan")

    @property
    def clip_rate(self) -> float:
        return self.clips / self.rounds if self.rounds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_time_s if self.wall_time_s else float("nan")

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d.update(
            acceptance_rate=self.acceptance_rate, clip_rate=self.clip_rate, tokens_per_s=self.tokens_per_s
        )
        return d

    def as_json(self) -> dict:
        """`as_dict` with undefined rates (NaN: nothing drafted, no time) as None, which JSON has."""
        return {k: finite_or_none(v) for k, v in self.as_dict().items()}

    def record(self, step: "Advance") -> None:
        """The one place a sampler's per-round counts reach the statistics."""
        self.rounds += step.rounds
        self.drafted_tokens += step.drafted
        self.accepted_tokens += step.accepted
        self.pilot_tokens += step.pilot
        self.rejections += step.rejections
        self.clips += step.clips
        self.fallbacks += step.fallbacks


@dataclass
class Advance:
    """What one step did to one sequence: the tokens it appends and the counts behind them."""

    tokens: list[int]
    rounds: int = 1  # drafts judged (the token, for fused)
    drafted: int = 0  # drafted tokens judged in real rounds
    accepted: int = 0  # drafted tokens kept
    pilot: int = 0  # scr: tokens drafted only to seed the threshold window
    rejections: int = 0  # scr: judged drafts that kept nothing
    clips: int = 0  # scr: judged drafts whose decision used an exceeded bound
    fallbacks: int = 0  # scr: exact tokens emitted after max_rejections empty drafts
    winner: int = 1  # the branch whose tokens are kept in the caches (0: no branch; fused: 0)


def prompt_rng(seed: int, index: int) -> torch.Generator:
    """The random stream of prompt `index` of a generate() call with this seed (the server uses it for
    choice `index` of a request, so offline generate() reproduces a served answer)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + index)


@dataclass
class Sequence:
    """One prompt being generated: its response, random stream and statistics."""

    max_new_tokens: int
    rng: torch.Generator
    stats: SequenceStats = field(default_factory=SequenceStats)
    y: list = field(default_factory=list)
    state: object = None  # the sampler's own per-sequence state (scr: ScrState), opaque here
    chunk_size: int = 0  # adaptive_chunk: this sequence's current draft length (0: not adapted yet)

    def uniforms(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.rng)

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.y)


@dataclass
class Batch:
    """The sequences generated together, and the scorer/drafter that hold their rows (same order)."""

    scorer: MultiPolicyScorer
    drafter: PolicyGroup | None
    target: TargetRows
    config: SamplerConfig
    temperature: float
    top_p: float
    eos: frozenset
    seqs: list

    @property
    def ys(self) -> list[list[int]]:
        return [s.y for s in self.seqs]

    def support(self) -> tuple[int, float] | None:
        """(anchor, alpha) when a sampler that reads p_1 token by token may score the other policies on
        the anchor's plausible tokens only (`MultiPolicyScorer.score(support=...)`): a product target
        kept to that set, on models that can return hidden states. None: full logits."""
        t = self.target
        if t.aggregator == "product" and t.plausibility > 0 and self.scorer.head_skippable:
            return t.anchor, t.plausibility
        return None

    def advance(self, steps: list[Advance]) -> None:
        """Append each sequence's tokens, record its counts, and keep in every cache what agrees."""
        for s, step in zip(self.seqs, steps):
            s.y.extend(step.tokens)
            s.stats.record(step)
            if self.config.adaptive_chunk and step.drafted:
                k = s.chunk_size or self.config.chunk_size
                s.chunk_size = next_chunk_size(k, step.accepted == step.drafted, self.config.max_chunk_size)
        self.commit([step.winner for step in steps])

    def commit(self, winners: list[int] | None = None) -> None:
        """Keep, in every cache, what agrees with the responses (winners: the branch kept per sequence)."""
        lengths = [len(s.y) for s in self.seqs]
        self.scorer.commit(lengths, winners)
        if self.drafter is not None:
            self.drafter.commit(lengths, winners)

    def retain(self, keep: list[int]) -> None:
        """Keep only the sequences at positions `keep` (finished ones leave), in every cache too."""
        self.scorer.select(keep)
        if self.drafter is not None:  # one row per sequence
            self.drafter.select(torch.tensor(keep, dtype=torch.long), torch.arange(len(keep)))
        self.seqs = [self.seqs[i] for i in keep]

    def chunk_sizes(self) -> list[int]:
        """Each sequence's draft length this round: its own adapted k (adaptive_chunk) or the config's,
        never past its token budget."""
        k0 = self.config.chunk_size
        return [max(1, min(s.chunk_size or k0, s.remaining)) for s in self.seqs]


def next_chunk_size(k: int, all_kept: bool, k_max: int) -> int:
    """transformers' "heuristic" assistant-token schedule: +2 after a round that kept every drafted token,
    else -1, never below 1 (and here never above k_max). Exactness is untouched: k depends on the past only."""
    return min(k + 2, k_max) if all_kept else max(k - 1, 1)


def gather_tokens(lp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """lp: [..., T, V], tokens: [..., T] broadcastable on leading dims -> [..., T] log-prob of each token."""
    idx = tokens.to(lp.device).expand(*lp.shape[:-1]).unsqueeze(-1)  # [..., T, 1]
    return lp.gather(-1, idx).squeeze(-1)


def proposal_logprobs(
    logits: torch.Tensor, temperature: float, top_p: float, plausibility: float
) -> torch.Tensor:
    """What drafts are drawn from: the proposal kept to its OWN plausible tokens at the target's alpha,
    then tempered. With the anchor as proposal this is exactly the target's support, so no draft is
    spent on a token the target gives mass 0 (at alpha 0.1 the base drafts one there often). Any q
    leaves speculative exact; scr's law is p_k restricted to chunks q can draw, as with top-p.

    logits: [..., V] -> [..., V] log-probs (-inf outside the plausible set and the top-p nucleus)
    """
    logits = logits.float()  # [..., V]
    # the rule is relative to the row's own top token, so raw logits serve as their own reference:
    # no log-softmax beyond temper's (this runs once per drafted token)
    return temper(plausible(logits, logits, plausibility), temperature, top_p)


def draft(
    batch: Batch, ks: list[int], n: int, need: list[bool] | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Draw n alternative chunks per sequence from the proposal (`proposal_logprobs`: kept to its
    plausible set, tempered), one forward per token for all.

    ks: each sequence's chunk size (K = max). returns tokens [B, n, K], q log-probs [B, n, K, V] of the
    distributions sampled from, and lengths [B][n]: k_b, or up to and including the first EOS.
    Each sequence draws its uniforms from its own stream, so a sequence's draft does not depend on
    which other sequences share the batch; need[b] False: sequence b's draft will be thrown away
    (scr pilots for other sequences), so it takes no uniforms and its stream stays where it was.
    """
    group, B, K = batch.drafter, len(batch.seqs), max(ks)
    u = torch.full((B, n, K), 0.5)  # [B, n, K]
    for b, (s, k) in enumerate(zip(batch.seqs, ks)):
        if need is None or need[b]:
            u[b, :, :k] = s.uniforms(n, k)
    logits = group.feed(batch.ys)[:, 0]  # [B, V] (the drafter has one row per sequence)
    alpha = batch.target.plausibility
    q = (
        proposal_logprobs(logits, batch.temperature, batch.top_p, alpha).unsqueeze(1).expand(B, n, -1)
    )  # [B, n, V]
    eos = torch.tensor(sorted(batch.eos), dtype=torch.long, device=logits.device)
    toks, qs = [], []
    for t in range(K):
        tok = sample(q, u[:, :, t])  # [B, n]
        toks.append(tok)
        qs.append(q)
        done = torch.stack(toks, 2)  # [B, n, t+1]
        if t + 1 == K or bool(torch.isin(done, eos).any(2).all()):
            break
        logits = group.extend_branches(tok)  # [B, n, V]
        q = proposal_logprobs(logits, batch.temperature, batch.top_p, alpha)  # [B, n, V]
    toks = torch.stack(toks, 2)  # [B, n, T], T <= K
    is_eos = torch.isin(toks, eos)  # [B, n, T]
    first = torch.where(is_eos.any(2), is_eos.int().argmax(2) + 1, toks.shape[2])  # [B, n]
    lengths = torch.minimum(first, torch.tensor(ks, device=first.device).unsqueeze(1)).tolist()
    return toks, torch.stack(qs, 2), lengths

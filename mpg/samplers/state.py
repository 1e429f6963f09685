"""Per-sequence state: what a sequence is asked for, its response and random stream, and its statistics.

Each sequence draws every uniform from its own CPU generator (`prompt_rng`), so its output does not
depend on which other sequences share its batch, whatever their targets and settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .config import SamplerConfig

__all__ = ["Advance", "Sequence", "SequenceSettings", "SequenceStats", "next_chunk_size", "prompt_rng"]


@dataclass(frozen=True)
class SequenceSettings:
    """How one sequence is sampled, besides its target: sampler, temperature, top-p, knobs, end tokens."""

    sampler: str
    temperature: float
    top_p: float
    config: SamplerConfig
    eos: frozenset

    def key(self) -> tuple:
        """Hashable identity."""
        return (self.sampler, self.temperature, self.top_p, self.config.key(), self.eos)


def _finite_or_none(x):
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
        return {k: _finite_or_none(v) for k, v in self.as_dict().items()}

    def record(self, step: Advance) -> None:
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
    """One prompt being generated: its settings, response, random stream and statistics."""

    max_new_tokens: int
    rng: torch.Generator
    settings: SequenceSettings | None = None
    stats: SequenceStats = field(default_factory=SequenceStats)
    y: list = field(default_factory=list)
    state: object = None  # the sampler's own per-sequence state (scr: ScrState), opaque here
    chunk_size: int = 0  # adaptive_chunk: this sequence's current draft length (0: not adapted yet)

    def uniforms(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.rng)

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.y)

    @property
    def config(self) -> SamplerConfig:
        return self.settings.config

    def draft_length(self) -> int:
        """This round's draft length: its own adapted k (adaptive_chunk) or the config's, never past its
        token budget."""
        return max(1, min(self.chunk_size or self.config.chunk_size, self.remaining))

    def adapt_chunk(self, step: Advance) -> None:
        """adaptive_chunk: the next round's k from this round's outcome."""
        if self.config.adaptive_chunk and step.drafted:
            k = self.chunk_size or self.config.chunk_size
            self.chunk_size = next_chunk_size(k, step.accepted == step.drafted, self.config.max_chunk_size)


def next_chunk_size(k: int, all_kept: bool, k_max: int) -> int:
    """transformers' "heuristic" assistant-token schedule: +2 after a round that kept every drafted token,
    else -1, never below 1 (and here never above k_max). Exactness is untouched: k depends on the past only."""
    return min(k + 2, k_max) if all_kept else max(k - 1, 1)

"""Training a draft head (`mpg.draft_head`) on the composed targets' own features: `mpg train-draft`.

Data. Texts (a prompt and a response) are scored teacher-forced by every policy a group of targets
uses, in one batched pass of all rows per text (`policy_features`); each target's composed features
are then a weighted sum of those rows (`TargetRows.features`), so the 16 MBTI types at two strengths
cost one pass of their 17 distinct policies per text. A sample is (text, target): inputs f_0..f_{T-1}
and the tokens after them, outputs f_1..f_T and the target's distributions there.

Loss (EAGLE): a smooth-L1 regression of the next feature plus the KL from the target's next-token
distribution (kept to its anchor's plausible set, as the sampler's target is) to the head's. A
second pass feeds the head its own predictions as inputs (as drafting deeper than one token does)
and adds the same loss at half weight.

Held-out acceptance (`draft_acceptance`): at depth d the head drafts d tokens from a window of true
pairs, the tokens themselves teacher-forced; per position, 1 - TV between its proposal (kept to its
own plausible set at the target's alpha, as the drafter's) and the exact target.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .aggregators import plausible, product_features
from .draft_head import DraftHead, DraftHeadConfig
from .fingerprint import weight_fingerprint
from .policies import Policy, Target
from .samplers.drafting import proposal_logprobs

__all__ = [
    "DraftTrainSettings",
    "FeatureSet",
    "draft_acceptance",
    "policy_features",
    "train_draft_head",
]


@dataclass
class DraftTrainSettings:
    steps: int = 600
    batch_size: int = 16  # (text, target) samples per step
    lr: float = 1e-3
    kl_weight: float = 1.0
    window: int = 16
    intermediate_size: int | None = None  # None: 2 x hidden
    seed: int = 0
    checkpoint_every: int = 50
    # share of each batch drawn from the targets' own sampled answers (when there are any): they are
    # few next to the data's texts x every persona, and they are what a drafter reads
    sampled_share: float = 0.5

    def __post_init__(self):
        if not 0 <= self.sampled_share <= 1:
            raise ValueError(f"sampled_share must be in [0, 1], got {self.sampled_share}")


@dataclass
class TargetSpec:
    """A target as rows of its group's policy list (what composing its features needs)."""

    name: str
    anchor: int
    num: list[int]
    den: list[int]
    weights: list[float]
    lam: float
    plausibility: float

    @classmethod
    def of(cls, name: str, target: Target, policies: list[Policy]) -> "TargetSpec":
        if target.aggregator != "product":
            raise ValueError(f"target {name!r}: a draft head is trained on product targets only")
        i = {p: k for k, p in enumerate(policies)}
        return cls(
            name,
            i[target.anchor],
            [i[a.num] for a in target.attributes],
            [i[a.den] for a in target.attributes],
            target.normalised_weights(),
            float(target.lam),
            float(target.plausibility),
        )

    def compose(self, h: torch.Tensor) -> torch.Tensor:
        """h: [..., P, T, H] the policies' features -> [..., T, H] this target's g."""
        return product_features(
            h[..., self.anchor, :, :],
            h[..., self.num, :, :].transpose(-3, -2),  # [..., T, n, H]
            h[..., self.den, :, :].transpose(-3, -2),
            torch.tensor(self.weights, dtype=h.dtype),
            self.lam,
        )


@dataclass
class FeatureSet:
    """Every text's policy features: records of (features [P, T+1, H], response tokens [T], group)."""

    features: list[torch.Tensor]
    tokens: list[torch.Tensor]
    group: list[int]  # index into `targets`: the targets each text is read under
    targets: list[list[TargetSpec]]

    def samples(self, keep=None) -> list[tuple[int, int]]:
        """(text, target) pairs; keep: a test on the target's name (None: every target)."""
        return [
            (r, j)
            for r, g in enumerate(self.group)
            for j, t in enumerate(self.targets[g])
            if keep is None or keep(t.name)
        ]

    def save(self, path: Path) -> None:
        torch.save(
            {
                "features": self.features,
                "tokens": self.tokens,
                "group": self.group,
                "targets": [[asdict(t) for t in ts] for ts in self.targets],
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> "FeatureSet":
        d = torch.load(path, weights_only=True)
        return cls(
            d["features"], d["tokens"], d["group"], [[TargetSpec(**t) for t in ts] for ts in d["targets"]]
        )


@torch.inference_mode()
def policy_features(
    engine, policies: list[Policy], texts: list[tuple[object, list[int]]]
) -> list[torch.Tensor]:
    """Each text's last hidden states under every policy, teacher-forced in one batched pass.

    texts: (prompt, response token ids) -> per text [P, T+1, H]: column 0 at each context's last token,
    column t after response token t."""
    from .policy_table import PolicyTable

    table = PolicyTable.for_policies(engine.chat, policies, [p for p, _ in texts])
    scorer = engine.build_scorer(table)
    T = max(len(r) for _, r in texts)
    chunks = torch.zeros(len(texts), 1, T, dtype=torch.long)  # [B, 1, T], padded after each response
    for b, (_, r) in enumerate(texts):
        chunks[b, 0, : len(r)] = torch.tensor(r)
    _, hidden = scorer.score_rows([[] for _ in texts], chunks, features=True)  # [N, 1, T+1, H]
    rows = torch.tensor(scorer.seq_rows())  # [B, P']
    index = table.index()
    cols = torch.tensor([index[p] for p in policies])  # [P] each policy's place in the table's order
    h = hidden[rows[:, cols].flatten()].view(len(texts), len(policies), T + 1, -1)  # [B, P, T+1, H]
    return [h[b, :, : len(r) + 1].cpu() for b, (_, r) in enumerate(texts)]  # in the engine's dtype


def _target_logprobs(W: torch.Tensor, g: torch.Tensor, anchor_h: torch.Tensor, alpha: float) -> torch.Tensor:
    """The exact target at each position: log_softmax(W g) kept to the anchor's plausible set.
    W: [V, H]; g, anchor_h: [..., H] -> [..., V]"""
    logits = (g.to(W.dtype) @ W.T).float()  # [..., V]
    if alpha > 0:
        anchor = (anchor_h.to(W.dtype) @ W.T).float()  # [..., V]
        logits = plausible(logits, anchor, alpha)
    return torch.log_softmax(logits, -1)


def _draft_logprobs(W: torch.Tensor, g: torch.Tensor, alpha: float) -> torch.Tensor:
    """The drafter's proposal from predicted features (`proposal_logprobs` at temperature 1).
    [..., H] -> [..., V]"""
    return proposal_logprobs(g.to(W.dtype) @ W.T, 1.0, 1.0, alpha)


def _batch(fs: FeatureSet, picks: list[tuple[int, int]]):
    """Composed features, anchor features, tokens and a validity mask, right-padded to the longest.
    -> g [B, T+1, H], anchor [B, T+1, H], tokens [B, T], valid [B, T], alphas [B]"""
    T = max(fs.tokens[r].shape[0] for r, _ in picks)
    H = fs.features[0].shape[-1]
    g = torch.zeros(len(picks), T + 1, H)
    a = torch.zeros(len(picks), T + 1, H)
    tok = torch.zeros(len(picks), T, dtype=torch.long)
    valid = torch.zeros(len(picks), T, dtype=torch.bool)
    alphas = []
    for b, (r, j) in enumerate(picks):
        spec = fs.targets[fs.group[r]][j]
        h = fs.features[r].float()  # [P, t+1, H]
        t = fs.tokens[r].shape[0]
        g[b, : t + 1] = spec.compose(h)
        a[b, : t + 1] = h[spec.anchor]
        tok[b, :t] = fs.tokens[r]
        valid[b, :t] = True
        alphas.append(spec.plausibility)
    return g, a, tok, valid, alphas


def _loss(head: DraftHead, embed: torch.Tensor, W: torch.Tensor, g, a, tok, valid, alphas, kl_weight: float):
    """(loss, second-pass loss) of one batch; see the module doc."""
    emb = embed[tok]  # [B, T, H]
    # right padding is invisible to the causal band of valid positions
    pred = head(g[:, :-1], emb, valid)  # [B, T, H]: predicts f_1..f_T
    with torch.no_grad():
        p = torch.stack(
            [_target_logprobs(W, g[b, 1:], a[b, 1:], alphas[b]) for b in range(len(alphas))]
        )  # [B, T, V]
        pmass = p.exp()

    def one(pred):
        reg = nn.functional.smooth_l1_loss(pred, g[:, 1:], reduction="none").mean(-1)  # [B, T]
        q = torch.log_softmax((pred.to(W.dtype) @ W.T).float(), -1)  # [B, T, V]
        kl = (pmass * (p - q).masked_fill(pmass == 0, 0.0)).sum(-1)  # [B, T]
        per = reg + kl_weight * kl
        return (per * valid).sum() / valid.sum()

    first = one(pred)
    rolled = torch.cat([g[:, :1], pred[:, :-1].detach()], 1)  # [B, T, H]: own predictions as inputs
    second = one(head(rolled, emb, valid))
    return first, second


def pick_batch(pools: tuple[list, list], share: float, size: int, rng: random.Random) -> list:
    """`size` samples, each from pools[0] (the sampled answers) with probability `share`, else from
    pools[1]; from whichever pool is not empty when one is."""
    out = []
    for _ in range(size):
        pool = pools[0] if pools[0] and (not pools[1] or rng.random() < share) else pools[1]
        out.append(pool[rng.randrange(len(pool))])
    return out


def train_draft_head(
    fs: FeatureSet,
    model,
    settings: DraftTrainSettings,
    out_dir: Path,
    *,
    keep=None,
    resume: bool = True,
    progress: bool = True,
) -> DraftHead:
    """Train a head on the samples of `fs` whose target name passes `keep` (checkpointed in out_dir every settings.checkpoint_every steps; with
    `resume`, a run picks up from its checkpoint)."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides = {"window": settings.window}
    if settings.intermediate_size:
        overrides["intermediate_size"] = settings.intermediate_size
    config = DraftHeadConfig.for_base(model, **overrides)
    head = DraftHead.fresh(config, seed=settings.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / max(settings.steps, 1))
    )
    step, spent, ckpt = 0, 0.0, out_dir / "checkpoint.pt"
    if resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, spent = state["step"], state.get("seconds", 0.0)
    t0 = time.perf_counter()
    W = model.get_output_embeddings().weight.detach()  # [V, H]
    embed = model.get_input_embeddings().weight.detach().float()  # [V, H]
    samples = fs.samples(keep)
    if not samples:
        raise ValueError("no training samples (every target held out?)")
    names = [fs.targets[fs.group[r]][j].name for r, j in samples]
    pools = (
        [s for s, n in zip(samples, names) if is_sampled(n)],
        [s for s, n in zip(samples, names) if not is_sampled(n)],
    )
    bar = tqdm(total=settings.steps, initial=step, desc="draft head", disable=not progress)
    head.train()
    while step < settings.steps:
        rng = random.Random(settings.seed * 1_000_003 + step)  # a resumed run draws the same batches
        picks = pick_batch(pools, settings.sampled_share, settings.batch_size, rng)
        first, second = _loss(head, embed, W, *_batch(fs, picks), settings.kl_weight)
        loss = first + 0.5 * second
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{first.item():.3f}", rolled=f"{second.item():.3f}")
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            state = {"head": head.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
            torch.save({**state, "step": step, "seconds": spent + time.perf_counter() - t0}, ckpt)
    bar.close()
    head.train_seconds = spent + time.perf_counter() - t0  # every run's time, resumed ones included
    return head.eval().requires_grad_(False)


@torch.no_grad()
def draft_acceptance(
    head: DraftHead,
    model,
    fs: FeatureSet,
    keep=None,
    depths: int = 4,
    starts: int = 6,
    progress: bool = True,
) -> dict[int, float]:
    """Mean per-token acceptance (1 - TV of proposal and exact target) at draft depths 1..`depths`,
    over `starts` evenly spaced draft positions of each (text, target) whose target name passes
    `keep` (None: all)."""
    W = model.get_output_embeddings().weight.detach()  # [V, H]
    embed = model.get_input_embeddings().weight.detach().float()
    from tqdm.auto import tqdm

    window = head.config.window
    sums, counts = [0.0] * (depths + 1), [0] * (depths + 1)
    for r, j in tqdm(fs.samples(keep), desc="held-out acceptance", unit="sample", disable=not progress):
        g, a, tok, _, alphas = _batch(fs, [(r, j)])
        T = tok.shape[1]
        for n in sorted({1 + (T - 1) * i // max(starts - 1, 1) for i in range(starts)}):
            # true pairs (f_i, y_{i+1}) for i < n; drafting y_{n+1}.. from them
            lo = max(0, n - window)
            f = g[:, lo:n].clone()  # [1, L, H]
            toks = tok[:, lo:n]  # [1, L]
            for d in range(1, depths + 1):
                if n + d - 1 > T:
                    break
                pred = head(f, embed[toks])[:, -1]  # [1, H]: f_{n+d-1}
                q = _draft_logprobs(W, pred, alphas[0]).exp()  # [1, V]
                p = _target_logprobs(W, g[:, n + d - 1], a[:, n + d - 1], alphas[0]).exp()  # [1, V]
                sums[d] += float(torch.minimum(p, q).sum())
                counts[d] += 1
                if n + d - 1 >= T:
                    break
                f = torch.cat([f, pred[:, None]], 1)
                toks = torch.cat([toks, tok[:, n + d - 1 : n + d]], 1)
    return {d: sums[d] / counts[d] for d in range(1, depths + 1) if counts[d]}


@torch.no_grad()
def anchor_acceptance(model, fs: FeatureSet, keep=None) -> float:
    """The same per-token acceptance for the anchor as proposal (the default drafter: its own
    distribution kept to its plausible set), at every position of the (text, target) pairs: the figure
    a head has to beat."""
    W = model.get_output_embeddings().weight.detach()
    total, n = 0.0, 0
    for r, j in fs.samples(keep):
        g, a, tok, _, alphas = _batch(fs, [(r, j)])
        T = tok.shape[1]
        p = _target_logprobs(W, g[0, 1 : T + 1], a[0, 1 : T + 1], alphas[0]).exp()  # [T, V]
        q = _draft_logprobs(W, a[0, 1 : T + 1], alphas[0]).exp()  # [T, V]
        total += float(torch.minimum(p, q).sum())
        n += T
    return total / n


def is_held_out_type(name: str) -> bool:
    return name.split("@")[0] in HELD_OUT_TYPES


def is_sampled(name: str) -> bool:
    """A target whose texts are answers sampled from itself (`add_sampled_answers`)."""
    return name.endswith(SAMPLED)


def held_out_acceptance(head: DraftHead, model, test: FeatureSet) -> dict[str, dict[int, float]]:
    """The gate's figures: acceptance by depth on held-out prompts (trained MBTI types), held-out
    personas (held-out MBTI types) and held-out role-play personas, each on the test split's texts;
    and, where the test set has them, on answers the held-out prompts got from the targets themselves."""
    sets = {
        "held-out prompts": lambda n: (
            not n.startswith("roleplay") and not is_held_out_type(n) and not is_sampled(n)
        ),
        "held-out MBTI types": lambda n: is_held_out_type(n) and not is_sampled(n),
        "held-out role-play personas": lambda n: n.startswith("roleplay"),
        "held-out prompts, the targets' own answers": lambda n: is_sampled(n) and not is_held_out_type(n),
        "held-out MBTI types, their own answers": lambda n: is_sampled(n) and is_held_out_type(n),
    }
    out = {}
    for name, keep in sets.items():
        if test.samples(keep):
            out[name] = {
                **draft_acceptance(head, model, test, keep),
                "anchor": anchor_acceptance(model, test, keep),
            }
    return out


def head_card(settings: DraftTrainSettings, data: dict, acceptance: dict, seconds: float, model) -> dict:
    """What goes in the head's config: data, settings, time, held-out acceptance, the base's fingerprint."""
    return {
        "data": data,
        "settings": asdict(settings),
        "train_seconds": round(seconds, 1),
        "held_out_acceptance": acceptance,
        "weight_fingerprint": weight_fingerprint(model),
        "trained": time.strftime("%Y-%m-%d"),
    }


def write_card_md(folder: Path, card: dict) -> None:
    """A human-readable card beside the head (the same facts as its config's "card")."""
    acc = card["held_out_acceptance"]
    lines = [
        "# Draft head",
        "",
        "Drafts the composed target of `proposal='head'` (speculative, scr) from its own features.",
        "Trained by `mpg train-draft`; see docs/design.md (draft head) for what it reads.",
        "",
        "## Data",
        "```json",
        json.dumps(card["data"], indent=1),
        "```",
        "## Settings",
        "```json",
        json.dumps(card["settings"], indent=1),
        "```",
        f"Training time: {card['train_seconds']} s ({card['data'].get('host', 'host not recorded')}).",
        "",
        "## Held-out acceptance (1 - TV to the exact target, per drafted token, by draft depth)",
        "",
        "| set | " + " | ".join(f"depth {d}" for d in range(1, 5)) + " | the anchor as proposal |",
        "|---|---|---|---|---|---|",
    ]
    for name, by_depth in acc.items():
        cells = [by_depth.get(str(d), by_depth.get(d, float("nan"))) for d in (1, 2, 3, 4, "anchor")]
        lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in cells) + " |")
    if card.get("note"):
        lines += ["", card["note"]]
    (folder / "README.md").write_text("\n".join(lines) + "\n")


# ---- the data: MBTI texts under the 16 types, role-play answers under their own personas ------------
HELD_OUT_TYPES = ("INFP", "ESTJ")  # personas never trained on: the held-out-persona acceptance
SAMPLED = "/sampled"  # suffix of the targets whose texts are answers sampled from themselves
MBTI_AXIS_FOLDERS = ("e_i", "s_n", "t_f", "j_p")
MBTI_TYPES = tuple(a + b + c + d for a in "EI" for b in "SN" for c in "TF" for d in "JP")


def mbti_pairs(data: Path, split: str) -> list[dict]:
    """Every axis's MBTI preference pairs of `split` (rows of the shared data's prefs files)."""
    rows = []
    for axis in MBTI_AXIS_FOLDERS:
        path = Path(data) / "mbti" / "prefs" / axis / f"{split}.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"no MBTI preference pairs at {path} (see the shared data README)")
        rows += [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return rows


def mbti_texts(data: Path, tokenizer, split: str, limit: int, max_tokens: int, seed: int = 0):
    """(instruction, response ids) from the MBTI preference pairs of `split`: both answers of a pair
    (each is some side's style), cut to max_tokens, shuffled with `seed`, the first `limit`."""
    rows = [(r["instruction"], a) for r in mbti_pairs(data, split) for a in (r["chosen"], r["rejected"])]
    rows = sorted(dict.fromkeys(rows))
    random.Random(seed).shuffle(rows)
    out = []
    for instruction, answer in rows[:limit]:
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:max_tokens]
        if len(ids) >= 2:
            out.append((instruction, ids))
    return out


def roleplay_entries(data: Path, tokenizer, start: int, stop: int, max_tokens: int):
    """(profile, personality, reference answer ids) of role-play personas start..stop-1."""
    path = Path(data) / "roleplay" / "test.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no role-play personas at {path} (see the shared data README)")
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()][start:stop]
    return [
        (
            r["profile"],
            r["personality"],
            tokenizer(r["reference_answer"], add_special_tokens=False)["input_ids"][:max_tokens],
        )
        for r in rows
    ]


def _group_features(
    engine, named: list[tuple[str, Target]], texts, pieces: int, bar=None
) -> tuple[list, list]:
    """Features of `texts` under every policy of the named targets: (per text [P, T+1, H], specs)."""
    policies = list(dict.fromkeys(p for _, t in named for p in t.policies()))
    specs = [TargetSpec.of(n, t, policies) for n, t in named]
    feats = []
    for i in range(0, len(texts), pieces):
        feats += policy_features(engine, policies, texts[i : i + pieces])
        if bar is not None:
            bar.update(len(texts[i : i + pieces]))
    return feats, specs


def mbti_instructions(data: Path, split: str, seed: int) -> list[str]:
    """The distinct instructions of the MBTI pairs of `split`, shuffled with `seed`."""
    rows = sorted({r["instruction"] for r in mbti_pairs(data, split)})
    random.Random(seed).shuffle(rows)
    return rows


def add_sampled_answers(
    engine,
    fs: FeatureSet,
    named: list[tuple[str, Target]],
    prompts: list[str],
    per_target: int,
    max_tokens: int,
    *,
    seed: int = 0,
    progress: bool = True,
    pieces: int = 4,
) -> int:
    """Answers sampled from each named target itself (`fused`, temperature 1), read teacher-forced
    under that target only and appended to `fs` as one group per target, its name suffixed SAMPLED.

    Why: a drafter reads the text its own target writes, which is not the shared data's style; the
    head should see that distribution. Target k answers prompts k*per_target.. of `prompts` (in turn).
    Returns the number of answers added."""
    from tqdm.auto import tqdm

    eos = engine.tokenizer.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    bar = tqdm(total=len(named) * per_target, desc="sampled answers", unit="answer", disable=not progress)
    added = 0
    for k, (name, target) in enumerate(named):
        asked = [prompts[(k * per_target + i) % len(prompts)] for i in range(per_target)]
        out = engine.generate(
            asked, target=target, max_new_tokens=max_tokens, seed=seed + k, batch_size=per_target
        )
        texts = []
        for prompt, ids in zip(asked, out.token_ids):
            ids = list(ids)
            while ids and ids[-1] in eos:
                ids.pop()
            if len(ids) >= 2:
                texts.append((prompt, ids))
        bar.update(per_target)
        if not texts:
            continue
        feats, specs = _group_features(engine, [(name + SAMPLED, target)], texts, pieces)
        fs.targets.append(specs)
        fs.group += [len(fs.targets) - 1] * len(texts)
        fs.features += feats
        fs.tokens += [torch.tensor(ids) for _, ids in texts]
        added += len(texts)
    bar.close()
    return added


def sampled_targets(engine, experts, lams, composition, held_out: bool) -> list[tuple[str, Target]]:
    """The MBTI targets answers are sampled from: the trained types at every lam (held_out False), or
    every type at the largest lam (held_out True: the gate's sampled answers)."""
    from .personas import persona

    types = list(MBTI_TYPES)
    if not held_out:
        types = [t for t in types if t not in HELD_OUT_TYPES]
    lams = [max(lams)] if held_out else list(lams)
    return [
        (f"{t}@{lam:g}", persona(engine, t, experts=experts, composition=composition).target(lam=lam))
        for t in types
        for lam in lams
    ]


def add_sampled_sets(
    engine,
    train: FeatureSet,
    test: FeatureSet,
    data: Path,
    experts,
    *,
    lams,
    per_target: int,
    test_per_target: int,
    max_tokens: int,
    composition=None,
    seed: int = 0,
) -> dict:
    """Answers sampled from the MBTI targets themselves added to both sets: `per_target` per trained
    type and lam to the train split's instructions (training), `test_per_target` per type (held-out
    types included) at the largest lam to the test split's (held out). -> a description of them."""
    t0 = time.perf_counter()
    for fs, held_out, n, split in (
        (train, False, per_target, "train"),
        (test, True, test_per_target, "test"),
    ):
        if n:
            named = sampled_targets(engine, experts, lams, composition, held_out)
            prompts = mbti_instructions(data, split, seed)
            add_sampled_answers(engine, fs, named, prompts, n, max_tokens, seed=seed)
    return {
        "sampled_per_target": per_target,
        "sampled_test": test_per_target,
        "sampled_seconds": round(time.perf_counter() - t0, 1),
        "sampled_source": "answers sampled from the targets themselves (fused, temperature 1) to the "
        "MBTI pairs' instructions of each split: trained types at every lam; held out: every type at "
        "the largest lam",
    }


def composition_name(composition=None) -> str:
    """The full name of the composition trained on (None: persona()'s default, as it is today)."""
    from .composition import Composition
    from .personas import DEFAULT_COMPOSITION

    if composition is None:
        return DEFAULT_COMPOSITION.name
    return (Composition.parse(composition) if isinstance(composition, str) else composition).name


def build_feature_sets(
    engine,
    data: Path,
    experts,
    *,
    lams=(0.5, 1.0),
    train_texts: int = 400,
    test_texts: int = 48,
    roleplay_train: int = 80,
    roleplay_test: int = 20,
    max_tokens: int = 64,
    composition=None,
    progress: bool = True,
    pieces: int = 4,
) -> tuple[FeatureSet, FeatureSet, dict]:
    """(training set, held-out set, a description of the data). MBTI: all 16 types at each lam over
    the train split's texts (training) and the test split's (held out: every type, so that the held-out
    types give the held-out-persona figure); role-play: personas 0..roleplay_train-1 for training, the
    next roleplay_test held out (experts only: prompted role-play has no experts)."""
    from tqdm.auto import tqdm

    from .personas import persona, resolve_experts

    tok = engine.tokenizer
    types = list(MBTI_TYPES)
    named = [
        (f"{t}@{lam:g}", persona(engine, t, experts=experts, composition=composition).target(lam=lam))
        for t in types
        for lam in lams
    ]
    train = mbti_texts(data, tok, "train", train_texts, max_tokens)
    test = mbti_texts(data, tok, "test", test_texts, max_tokens)
    use_rp = resolve_experts(experts) != "prompted" and roleplay_train + roleplay_test > 0
    rp_train = roleplay_entries(data, tok, 0, roleplay_train, max_tokens) if use_rp else []
    rp_test = (
        roleplay_entries(data, tok, roleplay_train, roleplay_train + roleplay_test, max_tokens)
        if use_rp
        else []
    )
    total = len(train) + len(test) + len(rp_train) + len(rp_test)
    bar = tqdm(total=total, desc="features", unit="text", disable=not progress)
    sets = []
    for mbti, rps in ((train, rp_train), (test, rp_test)):
        fs = FeatureSet([], [], [], [])
        feats, specs = _group_features(engine, named, mbti, pieces, bar)
        fs.targets.append(specs)
        fs.features += feats
        fs.tokens += [torch.tensor(r) for _, r in mbti]
        fs.group += [0] * len(mbti)
        for k, (profile, personality, ids) in enumerate(rps):
            p = persona(
                engine,
                None,
                profile=profile,
                personality=personality,
                experts=experts,
                composition=composition,
            )
            rp_named = [(f"roleplay{k}@{lam:g}", p.target(lam=lam)) for lam in lams]
            feats, specs = _group_features(engine, rp_named, [("", ids)], 1, bar)
            fs.targets.append(specs)
            fs.features += feats
            fs.tokens.append(torch.tensor(ids))
            fs.group.append(len(fs.targets) - 1)
        sets.append(fs)
    bar.close()
    described = {
        "mbti_types": types,
        "held_out_types": list(HELD_OUT_TYPES),
        "lams": list(lams),
        "aggregator": "product",
        "composition": composition_name(composition),
        "train_texts": len(train),
        "test_texts": len(test),
        "roleplay_train_personas": len(rp_train),
        "roleplay_test_personas": len(rp_test),
        "max_tokens": max_tokens,
        "source": "shared data: mbti/prefs/*/{train,test}.jsonl (both answers), roleplay/test.jsonl",
    }
    return sets[0], sets[1], described

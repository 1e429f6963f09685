"""Free-form answers under each method, scored by the independent judges.

Every method answers the same prompts with the same seeds (item j is sampled with seed
`seed * 100_003 + j` whatever the method), so methods differ only in the law they sample.

MBTI items (`mbti_items`): for each target type T, `per_type` prompts taken alternately from
(a) the self-description questions of qa_T.jsonl when the data has that file (ENTJ, ESTP), whose
    `reference` answer is written in T's voice, and
(b) the instructions of the four preference test splits (e_i, s_n, t_f, j_p), taken round-robin over
    the axes in file order, the same list for every type.
A type without a qa file takes all its prompts from (b). The default types ENTJ, INFP, ESTP, ISFJ
are two pairs of opposites, so each letter is asked for equally often and a judge that leans to one
side of an axis cannot lift a method's accuracy. (b)'s instructions were never seen by the experts
(test split) and are asked under several types, so content is held fixed across types.

Scores per method (`score_mbti`): for each axis, the share of answers whose judged letter is the
type's letter (Wilson 95% CI), the share with all four right, mean p(target letter); perplexity
under the plain base model after the plain prompt; distinct-1/2; MiniLM cosine to the reference
answer where there is one; tokens/s and draft acceptance. The same judge on the qa reference
answers is reported as row "reference" (the ceiling a persona-perfect answer reaches).

Role-play items (`roleplay_items`): the profiles of roleplay/test.jsonl; the method's target comes
from `roleplay_target` and is sampled with an empty user prompt (the role-play context asks the
model to open the conversation). Scores (`score_roleplay`): role-play judge p(in persona) (mean,
95% CI), cosine to the reference answer, and the same judge on the reference answers ("reference").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..distributed import current_shard
from ..personas import AXES, parse_mbti
from ..stats import bounded_mean_ci, proportion
from ..tokens import eos_token_ids
from .creativity import Embedder
from .judge import MBTI_FILES, MbtiJudge, RoleplayJudge
from .methods import generate_kwargs, mbti_target, roleplay_target
from .text_metrics import answer_ppls, distinct_summary, ppl_summary

__all__ = [
    "DEFAULT_TYPES",
    "SEED_STRIDE",
    "MbtiItem",
    "RoleplayItem",
    "generate_mbti",
    "generate_roleplay",
    "judge_mbti_rows",
    "mbti_accuracy",
    "mbti_items",
    "prefs_instructions",
    "roleplay_contexts",
    "roleplay_items",
    "score_mbti",
    "score_roleplay",
]

SEED_STRIDE = 100_003
DEFAULT_TYPES = ("ENTJ", "INFP", "ESTP", "ISFJ")


@dataclass(frozen=True)
class MbtiItem:
    id: str
    prompt: str
    mbti_type: str
    source: str  # "qa_ENTJ", "prefs_e_i", ...
    reference: str | None = None  # an answer in the type's voice (qa files only)


@dataclass(frozen=True)
class RoleplayItem:
    id: str
    profile: str
    personality: str
    reference: str


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist (see ../shared/data/README.md)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prefs_instructions(data_dir: str | Path) -> list[tuple[str, str]]:
    """(instruction, source) of the four prefs test splits, unique, round-robin over the axes."""
    per_axis = []
    for axis in AXES:
        rows = _jsonl(Path(data_dir) / "mbti/prefs" / MBTI_FILES[axis] / "test.jsonl")
        per_axis.append(
            [(r["instruction"], f"prefs_{MBTI_FILES[axis]}") for r in rows if r.get("instruction")]
        )
    out, seen = [], set()
    for i in range(max(map(len, per_axis))):
        for rows in per_axis:
            if i < len(rows) and rows[i][0] not in seen:
                seen.add(rows[i][0])
                out.append(rows[i])
    return out


def mbti_items(data_dir: str | Path, types: list[str], per_type: int, skip: int = 0) -> list[MbtiItem]:
    """`per_type` prompts per type, alternating qa_T questions (if the file exists) and prefs instructions;
    the first `skip` of each type's list left out (its items keep their ids: a later part of the same
    list, disjoint from an earlier run's)."""
    if per_type < 0 or skip < 0:
        raise ValueError(f"per_type and skip must be >= 0, got {per_type}, {skip}")
    per_type += skip
    pool = prefs_instructions(data_dir)
    items = []
    for t in types:
        t = "".join(parse_mbti(t))
        if len(t) != 4:
            raise ValueError(f"free-form items need a full four-letter type, got {t!r}")
        qa_path = Path(data_dir) / "mbti" / f"qa_{t}.jsonl"
        qa = (
            [(r["instruction"], f"qa_{t}", r.get("reference")) for r in _jsonl(qa_path)]
            if qa_path.is_file()
            else []
        )
        qi = pi = 0
        for k in range(per_type):
            if qa and qi < len(qa) and (k % 2 == 0 or pi >= len(pool)):
                prompt, source, ref = qa[qi]
                qi += 1
            elif pi < len(pool):
                (prompt, source), ref = pool[pi], None
                pi += 1
            else:
                break
            if k >= skip:
                items.append(MbtiItem(f"{t}-{k}", prompt, t, source, ref))
    return items


def roleplay_items(data_dir: str | Path, n: int) -> list[RoleplayItem]:
    """The first n profiles of roleplay/test.jsonl."""
    rows = _jsonl(Path(data_dir) / "roleplay" / "test.jsonl")
    return [
        RoleplayItem(f"rp-{i}", r["profile"], r["personality"], r.get("reference_answer", ""))
        for i, r in enumerate(rows[:n])
    ]


# ---- generation ---------------------------------------------------------------------------------
def _answer(
    engine, method, prompt: str, target, *, max_new_tokens: int, seed: int, temperature: float, top_p: float
) -> dict:
    out = engine.generate(
        prompt,
        target=target,
        **generate_kwargs(method),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )
    stats = out.stats[0].as_dict()
    return {
        "text": out.texts[0],
        "token_ids": out.token_ids[0],
        "stats": {k: v for k, v in stats.items() if k != "forward_passes"},
    }


def generate_mbti(
    engine,
    methods: list[str],
    items: list[MbtiItem],
    *,
    experts="shipped",
    layer: int = 20,
    alpha: float = 2.0,
    max_new_tokens: int = 128,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 0.9,
    progress: bool = True,
) -> list[dict]:
    """One row per (method, item). billy needs the type's merged vector registered on the engine
    (methods.register_merged_vector)."""
    from tqdm.auto import tqdm

    by_type: dict[str, list[tuple[int, MbtiItem]]] = {}
    for j, item in enumerate(items):
        by_type.setdefault(item.mbti_type, []).append((j, item))
    # one batched call per (method, type): the prompts share every forward pass; prompt i of the call
    # gets the random stream seed * SEED_STRIDE + first index + i, the same for every method. Calls are
    # the units a data-parallel run splits (mpg.distributed), so each is computed as in one process.
    calls = [(m, t, group) for m in methods for t, group in by_type.items()]
    shard = current_shard()
    mine = shard.mine(calls)
    bar = tqdm(
        total=sum(len(g) for _, (_, _, g) in mine), desc="free-form MBTI", unit="answer", disable=not progress
    )

    def call(m: str, t: str, group: list[tuple[int, MbtiItem]]) -> list[dict]:
        target = mbti_target(engine, m, t, experts=experts, layer=layer, alpha=alpha)
        bar.set_postfix_str(f"{m} {t}")
        out = engine.generate(
            [it.prompt for _, it in group],
            target=target,
            **generate_kwargs(m),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed * SEED_STRIDE + group[0][0],
            batch_size=len(group),
        )
        rows = []
        for (_, item), text, ids, st in zip(group, out.texts, out.token_ids, out.stats):
            stats = {k: v for k, v in st.as_dict().items() if k != "forward_passes"}
            rows.append({"method": m, **asdict(item), "text": text, "token_ids": ids, "stats": stats})
            bar.update()
        return rows

    done = shard.gather([(i, call(*unit)) for i, unit in mine])
    bar.close()
    order = {(r["method"], r["id"]): r for rows in done for r in rows}
    return [order[(m, it.id)] for m in methods for it in items]


def generate_roleplay(
    engine,
    methods: list[str],
    items: list[RoleplayItem],
    *,
    experts="shipped",
    max_new_tokens: int = 64,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 0.9,
    progress: bool = True,
) -> list[dict]:
    """One row per (method, profile); the anchor's context (the role-play prompt) is kept for perplexity."""
    from tqdm.auto import tqdm

    units = [(m, j, item) for m in methods for j, item in enumerate(items)]
    shard = current_shard()  # a data-parallel run splits the answers (mpg.distributed)
    mine = shard.mine(units)
    bar = tqdm(total=len(mine), desc="free-form role-play", unit="answer", disable=not progress)

    def answer(m: str, j: int, item: RoleplayItem) -> dict:
        target = roleplay_target(engine, m, item.profile, item.personality, experts=experts)
        bar.set_postfix_str(m)
        ans = _answer(
            engine,
            m,
            "",
            target,
            max_new_tokens=max_new_tokens,
            seed=seed * SEED_STRIDE + j,
            temperature=temperature,
            top_p=top_p,
        )
        bar.update()
        return {"method": m, **asdict(item), **ans}

    rows = shard.gather([(i, answer(*unit)) for i, unit in mine])
    bar.close()
    return rows


def roleplay_contexts(engine, items: list[RoleplayItem], experts="shipped") -> dict[str, list[int]]:
    """item id -> context ids of the plain base under the role-play prompt (perplexity context)."""
    out = {}
    for item in items:
        anchor = roleplay_target(engine, "base", item.profile, item.personality, experts=experts).anchor
        out[item.id] = engine.context_ids(anchor, "")
    return out


# ---- scoring ------------------------------------------------------------------------------------
def _perplexities(engine, rows: list[dict], contexts: list, progress: bool) -> None:
    """rows gain ppl / ppl_tokens under the plain base (a data-parallel run splits the rows)."""
    from tqdm.auto import tqdm

    eos = eos_token_ids(engine.models["base"], engine.tokenizer)  # the engine's own stopping rule
    shard = current_shard()
    mine = shard.mine(list(range(len(rows))))
    done = [
        (i, answer_ppls(engine, [rows[i]["token_ids"]], [contexts[i]], eos)[0])
        for _, i in tqdm(mine, desc="perplexity", unit="answer", disable=not progress)
    ]
    for r, (ppl, n) in zip(rows, shard.gather(done)):
        r["ppl"], r["ppl_tokens"] = ppl, n


def _cosines(embed: Embedder, texts: list[str], references: list[str]) -> list[float]:
    if not texts:
        return []
    a, b = embed(texts), embed(references)  # [N, D] each, L2-normalised
    return (a * b).sum(-1).tolist()


def _timing(rows: list[dict]) -> dict:
    tokens = sum(r["stats"]["new_tokens"] for r in rows)
    wall = sum(r["stats"]["wall_time_s"] for r in rows)
    drafted = sum(r["stats"].get("drafted_tokens", 0) for r in rows)
    accepted = sum(r["stats"].get("accepted_tokens", 0) for r in rows)
    return {
        "answers": len(rows),
        "new_tokens": tokens,
        "wall_time_s": wall,
        "tokens_per_s": tokens / wall if wall > 0 else None,
        "acceptance_rate": accepted / drafted if drafted else None,
    }


def judge_mbti_rows(judge: MbtiJudge, rows: list[dict], text_key: str = "text") -> None:
    """Add p_first [4], judged type and per-axis hits to every row (in place)."""
    if not rows:
        return
    p = judge.predict_proba([r[text_key] for r in rows])  # [N, 4]
    for i, r in enumerate(rows):
        judged = "".join(a[0] if p[i, k] > 0.5 else a[1] for k, a in enumerate(AXES))
        r["judge_p_first"] = [round(float(x), 4) for x in p[i]]
        r["judged_type"] = judged
        r["axis_hits"] = [judged[k] == r["mbti_type"][k] for k in range(4)]
        r["p_target"] = (
            sum(
                float(p[i, k]) if r["mbti_type"][k] == a[0] else 1 - float(p[i, k])
                for k, a in enumerate(AXES)
            )
            / 4
        )


def mbti_accuracy(rows: list[dict]) -> dict:
    """Per-axis and full-type accuracy (Wilson CIs) and mean p(target letter) of judged rows."""
    out = {f"{a[0]}/{a[1]}": proportion([r["axis_hits"][k] for r in rows]) for k, a in enumerate(AXES)}
    out["type"] = proportion([all(r["axis_hits"]) for r in rows])
    out["p_target"] = bounded_mean_ci([r["p_target"] for r in rows])
    return out


def score_mbti(
    engine, rows: list[dict], items: list[MbtiItem], judge: MbtiJudge, embed: Embedder, progress: bool = True
) -> dict:
    """Per-method summary (rows gain judge fields, perplexity and reference cosine in place);
    plus "reference": the judge on the qa reference answers."""

    judge_mbti_rows(judge, rows)
    _perplexities(engine, rows, [r["prompt"] for r in rows], progress)
    with_ref = [r for r in rows if r.get("reference")]
    for r, c in zip(
        with_ref, _cosines(embed, [r["text"] for r in with_ref], [r["reference"] for r in with_ref])
    ):
        r["reference_cosine"] = c
    summary = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == m]
        summary[m] = {
            **mbti_accuracy(mine),
            "ppl": ppl_summary([(r["ppl"], r["ppl_tokens"]) for r in mine]),
            **distinct_summary([r["text"] for r in mine]),
            "reference_cosine": bounded_mean_ci([r.get("reference_cosine") for r in mine], -1.0),
            **_timing(mine),
        }
    refs = [{"mbti_type": i.mbti_type, "text": i.reference} for i in items if i.reference]
    if refs:
        judge_mbti_rows(judge, refs)
        summary["reference"] = {
            **mbti_accuracy(refs),
            **distinct_summary([r["text"] for r in refs]),
            "answers": len(refs),
        }
    return summary


def score_roleplay(
    engine,
    rows: list[dict],
    items: list[RoleplayItem],
    judge: RoleplayJudge,
    embed: Embedder,
    contexts: dict[str, list[int]],
    progress: bool = True,
) -> dict:
    """Per-method: judge score, cosine to the reference answer, perplexity, distinct-n, timing; plus
    "reference": the judge on the reference answers."""

    if rows:
        s = judge.score(
            [r["text"] for r in rows], [r["profile"] for r in rows], [r["personality"] for r in rows]
        )
        for r, x, c in zip(
            rows, s.tolist(), _cosines(embed, [r["text"] for r in rows], [r["reference"] for r in rows])
        ):
            r["judge_score"], r["reference_cosine"] = x, c
    _perplexities(engine, rows, [contexts[r["id"]] for r in rows], progress)
    summary = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == m]
        summary[m] = {
            "judge_score": bounded_mean_ci([r["judge_score"] for r in mine]),
            "reference_cosine": bounded_mean_ci([r["reference_cosine"] for r in mine], -1.0),
            "ppl": ppl_summary([(r["ppl"], r["ppl_tokens"]) for r in mine]),
            **distinct_summary([r["text"] for r in mine]),
            **_timing(mine),
        }
    refs = [i for i in items if i.reference]
    if refs:
        s = judge.score([i.reference for i in refs], [i.profile for i in refs], [i.personality for i in refs])
        summary["reference"] = {
            "judge_score": bounded_mean_ci(s.tolist()),
            **distinct_summary([i.reference for i in refs]),
            "answers": len(refs),
        }
    return summary

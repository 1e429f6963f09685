"""The 16Personalities questionnaire (60 items) answered by every method for every one of the 16 types.

Each item is asked as the user prompt (`item_prompt`):

    Do you agree or disagree with the following statement? Answer with "Agree" or "Disagree".
    <statement>.

(the instruction first, so that it belongs to the context head every item shares and is computed once.)

and the two options "Agree" / "Disagree" are scored as the start of the assistant's response (no end
token: the answer *begins* with the option) under the method's target (mpg.eval.methods): policy and
steered methods by the policy's own log-prob, composed fused_* / speculative by "token" mode (exact
log p_1), scr_k* by "chunk" mode (log p~ of the option as one chunk). The chunk score is the same for
every k >= the option's token count ("Agree" and "Disagree" are 2 tokens each for SmolLM2), so scr_k2,
scr_k4 and scr_k8 give identical answers here; identical (target, mode) pairs are computed once. The
answer is the option with the higher score; a tie counts as no answer (wrong).

Style items (`style_items`): the same machinery on a two-option *style* test built from the held-out
preference pairs of each axis (`prefs/<axis>/test.jsonl`, never trained on): the prompt is the pair's
bare instruction, the two options are its two answers, written in the two sides' styles, and the
option "agreeing" with the item is the one in the side's letter named by the pair (`keyed`). The
calibrated reading below removes what makes one text likelier whatever the persona (length, wording),
so an item is right when the type's target moves toward the answer in its own letter's style more
than the average type does. This is what the experts were trained to tell apart, so a single expert's
accuracy on its own axis is its ceiling here, and a composition's per-axis accuracy shows what it keeps.

Calibrated reading (`calibrate`): SmolLM2-135M prefers "Agree" on almost every item under every method
(acquiescence), so the raw answers barely depend on the type. The calibrated score of item i for type
t is its margin relative to that item's mean margin over the types asked,

    c(t, i) = d(t, i) - mean_{t'} d(t', i),    d = score(Agree) - score(Disagree),

what the persona changes, with the item's shared lean removed. It is read with the same metrics below
(an item is right when c > 0 iff the keyed letter is the type's). Over all 16 types every letter is
held by exactly half of them, so the mean is the midpoint between the two sides of each axis; with
fewer types (reduced runs) pass a balanced set (e.g. two opposite types) or the mean leans.

Metrics, per method, each with a 95% Wilson interval:
- per-axis accuracy: an item is right when it is answered in the direction of the type's letter on its
  axis (Agree iff the keyed letter is the type's); n = types x items on that axis;
- full-type accuracy: per type and axis, the sum over that axis's items of the signed score difference
  (Agree - Disagree, negated for items keyed to the axis's second letter) picks the letter; a type is
  right when all four letters match; n = types.

Efficiency: every distinct policy of every target is scored once per item (mpg.likelihood.PolicyScorer:
one batched forward per model over the policies' item tails, after their shared context heads, cached once
for the whole run; then one small forward per option), and the methods are combined from those log-probs.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from ..distributed import current_shard
from ..likelihood import PolicyScorer, continuation_ids, option_scores
from ..personas import AXES, parse_mbti
from ..stats import accuracy_ci
from .methods import MBTI_METHODS, get_method, mbti_target, register_merged_vector

__all__ = [
    "INSTRUCTION",
    "OPTIONS",
    "TYPES",
    "accuracy",
    "axis_effects",
    "axis_of",
    "calibrate",
    "full_type",
    "item_prompt",
    "load_questionnaire",
    "run_questionnaire",
    "style_items",
]

INSTRUCTION = 'Do you agree or disagree with the following statement? Answer with "Agree" or "Disagree".'
OPTIONS = ("Agree", "Disagree")
TYPES = tuple("".join(t) for t in itertools.product(*AXES))  # the 16 types, ESTJ ... INFP


def axis_of(dimension: str) -> str:
    """ "E/I" or "P/J" -> the axis in mpg.personas.AXES order ("EI", "JP")."""
    letters = {c.strip().upper() for c in dimension.split("/")}
    for axis in AXES:
        if letters == set(axis):
            return axis
    raise ValueError(f"unknown questionnaire dimension {dimension!r}; expected one of E/I, S/N, T/F, J/P")


def load_questionnaire(path: str | Path) -> list[dict]:
    """Items {id, question, statement, dimension, keyed} from a JSON list (../shared/data/mbti/questionnaire_16p.json)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"questionnaire file {path} not found (expected ../shared/data/mbti/questionnaire_16p.json)"
        )
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"questionnaire file {path} is not valid JSON: {e}") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"questionnaire file {path} must hold a non-empty JSON list of items")
    for i, item in enumerate(items):
        missing = [
            k for k in ("statement", "dimension", "keyed") if not isinstance(item, dict) or k not in item
        ]
        if missing:
            raise ValueError(f"questionnaire item {i} in {path} lacks {', '.join(missing)}")
        if item["keyed"] not in axis_of(item["dimension"]):
            raise ValueError(
                f"questionnaire item {i} in {path}: keyed letter {item['keyed']!r} is not on {item['dimension']!r}"
            )
        item.setdefault("id", i + 1)
    return items


def item_prompt(item: dict) -> str:
    """The user prompt of an item: a style item's own prompt, else the Agree/Disagree question."""
    if "prompt" in item:
        return item["prompt"]
    return f"{INSTRUCTION}\n{item['statement'].strip().rstrip('.')}."


STYLE_AXES = {"EI": "e_i", "SN": "s_n", "TF": "t_f", "JP": "j_p"}


def style_items(data_dir: str | Path, per_axis: int) -> list[dict]:
    """`per_axis` two-option style items per axis from the held-out preference pairs (module docstring),
    sides alternating in file order: {id, prompt, options: [keyed side's answer, other side's], dimension,
    keyed, statement}."""
    from ..training import load_preferences

    if per_axis < 1:
        raise ValueError(f"per_axis must be >= 1, got {per_axis}")
    items = []
    for axis, folder in STYLE_AXES.items():
        rows = load_preferences(Path(data_dir) / "mbti" / "prefs" / folder / "test.jsonl")
        by_side = {c: [r for r in rows if r.get("side") == c] for c in axis}
        if not all(by_side.values()):
            raise ValueError(
                f"style items need pairs with a 'side' of both {axis[0]} and {axis[1]} in {folder}"
            )
        for k in range(per_axis):
            side = axis[k % 2]
            r = by_side[side][(k // 2) % len(by_side[side])]
            items.append(
                {
                    "id": f"{axis}-{k}",
                    "prompt": r.get("instruction", r["prompt"]),
                    "options": [r["chosen"], r["rejected"]],
                    "dimension": f"{axis[0]}/{axis[1]}",
                    "keyed": side,
                    "statement": r.get("instruction", r["prompt"])[:80],
                }
            )
    return items


def full_type(mbti_type: str) -> str:
    """Validate a full four-letter type ("entj" -> "ENTJ")."""
    letters = parse_mbti(mbti_type)
    if len(letters) != 4 or any(w != 1.0 for w in letters.values()):
        raise ValueError(f"the questionnaire needs full four-letter types such as ENTJ, got {mbti_type!r}")
    return "".join(letters)


# ---- metrics (pure) ----------------------------------------------------------------------------
def _ci(correct: int, n: int) -> dict:
    """One accuracy entry of the results: {acc (rounded), ci95 (Wilson), n, correct}."""
    a = accuracy_ci(correct, n)
    return {"acc": round(a["accuracy"], 4), "ci95": a["ci95"], "n": n, "correct": correct}


def accuracy(scores: dict[str, dict[str, tuple[float, float]]], items: list[dict]) -> dict:
    """Metrics of one method from its score table {type: {str(item id): (agree, disagree)}}."""
    per_axis = {a: [0, 0] for a in AXES}  # axis -> [correct, n]
    types_right, predicted = 0, {}
    for mbti_type, table in scores.items():
        evidence = dict.fromkeys(AXES, 0.0)  # toward the axis's first letter
        for item in items:
            axis = axis_of(item["dimension"])
            letter = next(c for c in mbti_type if c in axis)
            agree, disagree = table[str(item["id"])]
            diff = agree - disagree
            want_agree = item["keyed"] == letter
            per_axis[axis][0] += int(diff > 0 if want_agree else diff < 0)
            per_axis[axis][1] += 1
            evidence[axis] += diff if item["keyed"] == axis[0] else -diff
        guess = "".join(a[0] if evidence[a] > 0 else a[1] if evidence[a] < 0 else "?" for a in AXES)
        predicted[mbti_type] = guess
        types_right += int(guess == "".join(next(c for c in mbti_type if c in a) for a in AXES))
    out = {"per_axis": {a: _ci(c, n) for a, (c, n) in per_axis.items() if n}}
    c, n = sum(v[0] for v in per_axis.values()), sum(v[1] for v in per_axis.values())
    out["items"] = _ci(c, n)
    out["full_type"] = {**_ci(types_right, len(scores)), "predicted": predicted}
    return out


def calibrate(scores: dict[str, dict[str, tuple[float, float]]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Score table -> calibrated table {type: {item: (c, 0.0)}}, c = the type's margin minus the item's
    mean margin over the types in the table (module docstring); `accuracy` reads it as it is."""
    types = list(scores)
    if not types:
        return {}
    ids = list(scores[types[0]])
    mean = {i: sum(scores[t][i][0] - scores[t][i][1] for t in types) / len(types) for i in ids}
    return {t: {i: (scores[t][i][0] - scores[t][i][1] - mean[i], 0.0) for i in ids} for t in types}


def axis_effects(scores: dict[str, dict[str, tuple[float, float]]], items: list[dict]) -> dict[str, float]:
    """Root mean square of the calibrated margin over each axis's items and the types: how far the
    method moves that axis's answers across types (nats). A single expert's effect on *other* axes is
    its interference (its calibrated accuracy there is 0.5 by construction: it sees one letter only)."""
    cal = calibrate(scores)
    out = {}
    for axis in AXES:
        ids = [str(it["id"]) for it in items if axis_of(it["dimension"]) == axis]
        values = [cal[t][i][0] ** 2 for t in cal for i in ids]
        if values:
            out[axis] = round((sum(values) / len(values)) ** 0.5, 4)
    return out


# ---- the run -----------------------------------------------------------------------------------
def run_questionnaire(
    engine,
    methods=MBTI_METHODS,
    types=TYPES,
    items: list[dict] | str | Path | None = None,
    *,
    experts="shipped",
    vectors=None,
    layer: int = 20,
    alpha: float = 2.0,
    max_items: int | None = None,
    options: tuple[str, str] = OPTIONS,
    progress: bool = True,
) -> dict:
    """Answer the items under every (method, type); returns metrics and per-item raw scores (JSON-ready).

    items: a list from `load_questionnaire` or its path; max_items keeps the first n (reduced runs);
    experts: as in mpg.eval.methods ("shipped", "prompted", a folder, or a callable letter -> Attribute);
    vectors: PersonaVectors with the letters' vectors, needed for "billy" (merged per type, steered at
    `layer` with `alpha`); options: the (agreeing, disagreeing) answers scored."""
    t0 = time.perf_counter()
    if items is None or isinstance(items, (str, Path)):
        if items is None:
            raise ValueError("no questionnaire items: pass items=load_questionnaire(path) or a path")
        items = load_questionnaire(items)
    items = list(items)[:max_items] if max_items is not None else list(items)
    if not items:
        raise ValueError("no questionnaire items to ask")
    methods = [get_method(m) for m in methods]
    types = [full_type(t) for t in types]
    if any(m.kind == "steered" for m in methods):
        if vectors is None:
            raise ValueError(
                "method 'billy' needs persona vectors (vectors=PersonaVectors with the 8 letters)"
            )
        for t in types:
            register_merged_vector(engine, vectors, t)

    targets = {
        (m.name, t): (mbti_target(engine, m, t, experts=experts, layer=layer, alpha=alpha), m.likelihood_mode)
        for m in methods
        for t in types
    }
    distinct = list(dict.fromkeys(targets.values()))  # scr_k2/k4/k8 share one (target, mode)
    policies = list(
        dict.fromkeys(
            p
            for tgt, _ in distinct
            for p in [tgt.anchor, *(x for a in tgt.attributes for x in (a.num, a.den))]
        )
    )
    index = {p: i for i, p in enumerate(policies)}
    global_options = [continuation_ids(engine, o) for o in options]
    item_options = [
        [continuation_ids(engine, o) for o in item["options"]] if "options" in item else global_options
        for item in items
    ]

    # every process builds the scorer over all items (the same shared context heads as one process),
    # then scores its share of the items (mpg.distributed: one process under plain python)
    scorer = PolicyScorer(engine, policies, [item_prompt(item) for item in items])  # heads cached once
    shard = current_shard()
    mine = shard.mine(list(range(len(items))))
    bar = _progress(len(mine), progress)
    done = []
    for _, i in mine:
        lp, tokens, mask = scorer.logprobs(i, item_options[i])  # [P, 2, T, V]
        per_target = [
            [float(s) for s in option_scores(key[0], index, lp, tokens, mask, key[1])[0]] for key in distinct
        ]  # [targets][2]
        done.append((i, per_target))
        if bar:
            bar.update()
    if bar:
        bar.close()
    answered = shard.gather(done)  # [items][targets][2], in item order, on every process
    raw = {
        key: {str(item["id"]): answered[i][k] for i, item in enumerate(items)}
        for k, key in enumerate(distinct)
    }

    scores = {m.name: {t: raw[targets[(m.name, t)]] for t in types} for m in methods}
    return {
        "options": list(options),
        "instruction": INSTRUCTION,
        "types": types,
        "items": [{k: item[k] for k in ("id", "statement", "dimension", "keyed")} for item in items],
        "item_kind": "style" if any("options" in item for item in items) else "agree/disagree",
        "policies": len(policies),
        "targets": len(distinct),
        "wall_s": round(time.perf_counter() - t0, 2),
        "methods": {
            m.name: {
                "mode": m.likelihood_mode,
                **accuracy(scores[m.name], items),
                "calibrated": accuracy(calibrate(scores[m.name]), items),
                "calibrated_rms": axis_effects(scores[m.name], items),
            }
            for m in methods
        },
        "scores": scores,
    }


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="questionnaire items")

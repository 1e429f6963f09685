"""Per-axis fidelity: each MBTI axis's judged accuracy for its expert alone, for a composition of that ONE
attribute, and inside every four-attribute type, with perplexity under the base beside each.

For every composition C (mpg.composition) the methods are (mpg.eval.methods):

- `expert_EI` ... `expert_JP`  the axis expert alone (the adapter under the type's side's trait context);
- `one:EI:C` ... `one:JP:C`    C applied to that ONE attribute (the type's side of the axis);
- `compose:C`                  C applied to the type's four attributes;
- `prompt`, `base`             the multi-trait system prompt, and the plain base.

Every method answers the same free-form items (mpg.eval.freeform.mbti_items: by default all 16 types x
16 items, each item sampled with seed `seed * 100_003 + j` whatever the method) with `fused` (exact p_1).
The MBTI judges (mpg.eval.judge) read every answer; a method of one axis (expert alone, one attribute)
is scored on its own axis only, the others on all four. Reported per axis: accuracy [95% Wilson], its
ratio to the expert alone on the same items [95% paired bootstrap], perplexity under the plain base
(geometric mean [95% CI]); per four-attribute method: the mean per-axis accuracy over answers and its
paired difference to `prompt`; and the goals (`goals` in results.json): one attribute keeps >= 0.9x its
expert alone on every axis; four attributes keep >= 0.8x on every axis, beat the prompt's mean per-axis
accuracy by >= 20% relative with a paired interval above 0, at a perplexity no higher than the prompt's.

    .venv/bin/python benchmarks/record/axes.py --compositions "product,lam=1,plausibility=0.1" --out out/axes

Sampling and scoring split as in benchmarks/fidelity.py (`--generate-only`, then `--answers`: answers
files from either benchmark mix, when sampled with the same settings). Writes results.json, table.md and
axes.png under --out.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root: this mpg, benchmarks.common
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from mpg import Engine  # noqa: E402
from mpg.composition import Composition  # noqa: E402
from mpg.eval import freeform as ff  # noqa: E402
from mpg.eval.judge import load_or_train_judges, make_embedder  # noqa: E402
from mpg.eval.methods import COMPOSE, ONE, VIA, get_method, mbti_target  # noqa: E402
from mpg.eval.questionnaire import TYPES  # noqa: E402
from mpg.eval.text_metrics import ppl_summary  # noqa: E402
from mpg.likelihood import target_logliks  # noqa: E402
from mpg.personas import AXES, TRAITS  # noqa: E402
from mpg.stats import bounded_mean_ci, paired_bootstrap_ci, proportion  # noqa: E402

KINDS = ("base", "prompt", "expert", "one", "four")
AXIS_NAMES = [f"{a[0]}/{a[1]}" for a in AXES]
GOAL_ONE, GOAL_FOUR, GOAL_RELATIVE = 0.9, 0.8, 0.20


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--out", default="out/axes")
    ap.add_argument("--compositions", default="product,lam=1,plausibility=0.1", help="';'-separated")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"which methods, among {', '.join(KINDS)}")
    ap.add_argument("--types", default="all", help="comma list of four-letter types, or 'all' (the 16)")
    ap.add_argument("--per-type", type=int, default=16, help="free-form items per type")
    ap.add_argument("--skip", type=int, default=4, help="leave out each type's first N items")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--via",
        default="",
        help="comma list of SAMPLER/PROPOSAL/K (e.g. scr/anchor/4,scr/head/4): each composition's four-"
        "attribute target also sampled that way, compared pairwise with its fused answers (drift)",
    )
    ap.add_argument("--base", default=None, help="local model folder (default: the embedded SmolLM2-135M)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--experts", default="shipped")
    ap.add_argument("--judges", default="out/judges")
    ap.add_argument("--embedder", default="minilm")
    # recorded with the answers so that files from benchmarks/fidelity.py (same defaults) can be mixed in
    ap.add_argument("--layer", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vectors", default="out/vectors/persona_vectors", help=argparse.SUPPRESS)
    common.add_answers_args(ap)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        args.compositions = list(
            dict.fromkeys(Composition.parse(c) for c in args.compositions.split(";") if c.strip())
        )
    except ValueError as e:
        ap.error(f"--compositions: {e}")
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.via = [v.strip() for v in args.via.split(",") if v.strip()]
    try:
        for v in args.via:
            get_method(f"{VIA}{v}:{args.compositions[0].name}")
    except ValueError as e:
        ap.error(f"--via: {e}")
    if args.via and "four" not in args.kinds:
        ap.error("--via compares with the four-attribute fused answers: keep 'four' in --kinds")
    bad = [k for k in args.kinds if k not in KINDS]
    if bad or not args.kinds:
        ap.error(f"--kinds: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(KINDS)}")
    if args.types.strip().lower() == "all":
        args.types = list(TYPES)
    else:
        args.types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
        for t in args.types:
            if (
                len(t) != 4
                or any(sum(c in a for c in t) != 1 for a in AXES)
                or any(c not in TRAITS for c in t)
            ):
                ap.error(f"--types: {t!r} is not a four-letter MBTI type")
    if args.per_type < 1 or args.skip < 0 or args.max_new_tokens < 1:
        ap.error("--per-type and --max-new-tokens must be >= 1, --skip >= 0")
    return args


def methods_of(args) -> list[str]:
    """Every method's name, in the table's order."""
    out = [k for k in ("base", "prompt") if k in args.kinds]
    if "expert" in args.kinds:
        out += [f"expert_{a}" for a in AXES]
    for c in args.compositions:
        if "one" in args.kinds:
            out += [f"{ONE}{a}:{c.name}" for a in AXES]
        if "four" in args.kinds:
            out.append(COMPOSE + c.name)
            out += [f"{VIA}{v}:{c.name}" for v in args.via]
    return out


def method_axis(method: str) -> str | None:
    """The one axis a method imposes (expert alone, one attribute), or None (it imposes the whole type)."""
    if method.startswith("expert_"):
        return method.removeprefix("expert_")
    return get_method(method).axis if method.startswith(ONE) else None


def paired_ratio_ci(a: list[float], b: list[float], reps: int = 2000, seed: int = 0) -> dict:
    """mean(a) / mean(b) over paired items, with a 95% percentile-bootstrap interval (items resampled
    together, seeded): {mean, lo, hi, n}; None where mean(b) is 0."""
    n = len(a)
    if n != len(b) or not n:
        raise ValueError(f"paired scores need equal, non-zero lengths, got {len(a)} and {len(b)}")

    def ratio(idx):
        den = sum(b[i] for i in idx)
        return sum(a[i] for i in idx) / den if den else None

    rng = random.Random(seed)
    draws = sorted(
        r for r in (ratio([rng.randrange(n) for _ in range(n)]) for _ in range(reps)) if r is not None
    )
    mid = ratio(range(n))
    if mid is None or not draws:
        return {"mean": None, "lo": None, "hi": None, "n": n}
    return {
        "mean": mid,
        "lo": draws[int(0.025 * len(draws))],
        "hi": draws[int(0.975 * len(draws)) - 1],
        "n": n,
    }


def axis_hits(rows: list[dict], method: str, k: int) -> dict[str, float]:
    """{item id: 1.0 if the judge read the type's letter on axis k} for a method's rows."""
    return {r["id"]: float(r["axis_hits"][k]) for r in rows if r["method"] == method}


def summarise(rows: list[dict], methods: list[str], seed: int = 0) -> dict:
    """Per method: per-axis accuracy (its own axis only for one-axis methods) [Wilson], the ratio to the
    expert alone on the same items [paired bootstrap], perplexity; four-attribute methods also the mean
    per-axis accuracy over answers and its paired difference to `prompt`."""
    out: dict = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        own = method_axis(m)
        entry: dict = {
            "answers": len(mine),
            "axis": own,
            "ppl": ppl_summary([(r["ppl"], r["ppl_tokens"]) for r in mine]),
            "per_axis": {},
        }
        for k, (axis, name) in enumerate(zip(AXES, AXIS_NAMES)):
            if own is not None and own != axis:
                continue
            hits = axis_hits(rows, m, k)
            acc = proportion([bool(v) for v in hits.values()])
            expert = axis_hits(rows, f"expert_{axis}", k)
            shared = [i for i in hits if i in expert]
            if expert and m != f"expert_{axis}" and len(shared) == len(hits):
                acc["vs_expert"] = paired_ratio_ci(
                    [hits[i] for i in shared], [expert[i] for i in shared], seed=seed
                )
            # by the type's letter on this axis: a composition that leans one way whatever the type
            # is read right on one side and wrong on the other
            acc["by_letter"] = {
                c: proportion([bool(r["axis_hits"][k]) for r in mine if r["mbti_type"][k] == c])
                for c in axis
                if any(r["mbti_type"][k] == c for r in mine)
            }
            entry["per_axis"][name] = acc
        if own is None and mine:
            score = {r["id"]: sum(r["axis_hits"]) / 4 for r in mine}
            entry["mean_axis"] = bounded_mean_ci(list(score.values()))
            base = {r["id"]: sum(r["axis_hits"]) / 4 for r in rows if r["method"] == "prompt"}
            if m != "prompt" and base and all(i in base for i in score):
                entry["vs_prompt"] = paired_bootstrap_ci(
                    [score[i] for i in score], [base[i] for i in score], seed=seed
                )
        if m.startswith(VIA) and mine:
            entry.update(drift(rows, m, seed))
        out[m] = entry
    return out


def drift(rows: list[dict], method: str, seed: int = 0) -> dict:
    """How far a via: method's answers are from the fused answers of the same target, items and seeds:
    the paired difference of the mean per-axis accuracy, of each answer's mean per-token target
    log-likelihood (log p_1 without the plausibility cut) and of its perplexity under the base (the
    default proposal's own law: a sampler drifting toward it lowers it); and its acceptance and clip
    rates."""
    fused = COMPOSE + method.split(":", 2)[2]  # via:S/P/K:C -> compose:C
    mine = {r["id"]: r for r in rows if r["method"] == method}
    ref = {r["id"]: r for r in rows if r["method"] == fused}
    ids = [i for i in mine if i in ref]
    out: dict = {"fused_method": fused}
    if not ids:
        return out
    out["vs_fused"] = paired_bootstrap_ci(
        [sum(mine[i]["axis_hits"]) / 4 for i in ids], [sum(ref[i]["axis_hits"]) / 4 for i in ids], seed=seed
    )
    if all("target_lp" in mine[i] and "target_lp" in ref[i] for i in ids):
        out["target_lp"] = bounded_mean_ci([mine[i]["target_lp"] for i in ids], -50, 0)
        out["target_lp_vs_fused"] = paired_bootstrap_ci(
            [mine[i]["target_lp"] for i in ids], [ref[i]["target_lp"] for i in ids], seed=seed
        )
    out["log_ppl_vs_fused"] = paired_bootstrap_ci(
        [math.log(mine[i]["ppl"]) for i in ids], [math.log(ref[i]["ppl"]) for i in ids], seed=seed
    )
    st = [mine[i]["stats"] for i in ids]
    drafted, rounds = sum(s["drafted_tokens"] for s in st), sum(s["rounds"] for s in st)
    out["acceptance"] = sum(s["accepted_tokens"] for s in st) / drafted if drafted else None
    out["clip_rate"] = sum(s["clips"] for s in st) / rounds if rounds else None
    out["fallbacks_per_answer"] = sum(s["fallbacks"] for s in st) / len(st)
    return out


def target_lps(engine, rows: list[dict], items, methods: list[str], experts, progress: bool) -> None:
    """Rows of four-attribute methods gain `target_lp`: the mean per-token log p_1 of their answer under
    their own composed target (teacher-forced, no plausibility cut: `mpg.likelihood`, token mode)."""
    from tqdm.auto import tqdm

    by_id = {it.id: it for it in items}
    todo = [r for r in rows if r["method"] in methods and r["token_ids"]]
    for r in tqdm(todo, desc="target log-likelihood", unit="answer", disable=not progress):
        item = by_id[r["id"]]
        method = COMPOSE + r["method"].split(":", 2)[2] if r["method"].startswith(VIA) else r["method"]
        target = mbti_target(engine, method, item.mbti_type, experts=experts)
        score, _ = target_logliks(engine, target, item.prompt, [r["token_ids"]])
        r["target_lp"] = float(score[0]) / len(r["token_ids"])


def goals(summary: dict, compositions: list[Composition]) -> dict:
    """Per composition, whether the per-axis goals are met (None where a needed method was not run)."""
    out = {}
    prompt = summary.get("prompt")
    for c in compositions:
        g: dict = {}
        ratios_one = [
            summary.get(f"{ONE}{a}:{c.name}", {})
            .get("per_axis", {})
            .get(n, {})
            .get("vs_expert", {})
            .get("mean")
            for a, n in zip(AXES, AXIS_NAMES)
        ]
        g["one_min_ratio"] = None if None in ratios_one else min(ratios_one)
        g["one_every_axis_0.9x"] = None if None in ratios_one else min(ratios_one) >= GOAL_ONE
        four = summary.get(COMPOSE + c.name)
        if four:
            ratios = [four["per_axis"][n].get("vs_expert", {}).get("mean") for n in AXIS_NAMES]
            g["four_min_ratio"] = None if None in ratios else min(ratios)
            g["four_every_axis_0.8x"] = None if None in ratios else min(ratios) >= GOAL_FOUR
            vs = four.get("vs_prompt")
            if vs and prompt:
                g["four_relative_to_prompt"] = vs["relative"]
                g["four_paired_lo"] = vs["lo"]
                g["four_beats_prompt_by_20pct"] = vs["relative"] >= GOAL_RELATIVE and vs["lo"] > 0
                g["four_ppl_over_prompt"] = four["ppl"]["mean"] / prompt["ppl"]["mean"]
                g["four_ppl_within_prompt"] = four["ppl"]["mean"] <= prompt["ppl"]["mean"]
        out[c.name] = g
    return out


def run(args, engine, *, experts, judges=None, embed=None) -> dict:
    progress = not args.no_progress
    data = Path(args.data)
    t0 = time.perf_counter()
    items = ff.mbti_items(data, args.types, args.per_type, args.skip)
    methods = methods_of(args)
    if args.answers:
        try:
            rows = common.load_answers(
                args.answers.split(","), "freeform", methods, items, common.sampling_settings(args)
            )
        except ValueError as e:
            raise SystemExit(f"--answers {e}") from None
    else:
        rows = ff.generate_mbti(
            engine,
            methods,
            items,
            experts=experts,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            temperature=args.temperature,
            top_p=args.top_p,
            progress=progress,
        )
    sampled_s = time.perf_counter() - t0
    if args.generate_only:
        return {"rows": rows, "sample_s": round(sampled_s, 1)}
    if judges is None:
        embed = embed or make_embedder(args.embedder)
        judges = load_or_train_judges(data, args.judges, args.embedder, embed=embed, progress=progress)
    ff.score_mbti(engine, rows, items, judges[0], embed or judges[0].embed, progress)
    if args.via:
        fours = [m for m in methods if m.startswith((COMPOSE, VIA))]
        target_lps(engine, rows, items, fours, experts, progress)
    summary = summarise(rows, methods, args.seed)
    return {
        "methods": summary,
        "goals": goals(summary, args.compositions),
        "judges": judges[0].report,
        "types": args.types,
        "items": len(items),
        "max_new_tokens": args.max_new_tokens,
        "sampler": "fused (via: methods their own sampler)",
        "sample_s": round(sampled_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "rows": [{k: v for k, v in r.items() if k != "token_ids"} for r in rows],
    }


def _ci(c: dict | None, digits: int = 2) -> str:
    if not c or c.get("mean") is None:
        return "–"
    return f"{c['mean']:.{digits}f} [{c['lo']:.{digits}f}, {c['hi']:.{digits}f}]"


def write_table(results: dict, path: Path) -> None:
    methods = results["methods"]
    lines = [
        "| method | " + " | ".join(AXIS_NAMES) + " | mean per-axis | vs prompt (paired) | ppl | n |",
        "|---" * (len(AXIS_NAMES) + 5) + "|",
    ]
    for m, e in methods.items():
        cells = []
        for n in AXIS_NAMES:
            a = e["per_axis"].get(n)
            if a is None:
                cells.append("")
                continue
            r = a.get("vs_expert")
            cells.append(
                _ci(a) + (f" ({r['mean']:.2f}x [{r['lo']:.2f}, {r['hi']:.2f}])" if r and r["mean"] else "")
            )
        vs = e.get("vs_prompt")
        vs_cell = (
            f"{vs['mean']:+.3f} [{vs['lo']:+.3f}, {vs['hi']:+.3f}] ({vs['relative']:+.0%})" if vs else "–"
        )
        lines.append(
            f"| {m} | " + " | ".join(cells) + f" | {_ci(e.get('mean_axis'), 3)} | {vs_cell} | "
            f"{_ci(e['ppl'])} | {e['answers']} |"
        )
    lines += [
        "",
        "Per-axis: judged accuracy [95% Wilson] (ratio to the expert alone on the same items [95% paired "
        "bootstrap]); one-axis methods (expert_*, one:*) on their own axis only. mean per-axis: each "
        "answer's share of its type's letters judged right [95% t]; vs prompt: its paired difference to "
        "`prompt` [95% bootstrap] (relative); ppl: perplexity under the plain base (geometric mean [95% CI]).",
    ]
    leaning = [(m, e) for m, e in methods.items() if e.get("axis") is None and e["answers"]]
    if leaning:
        lines += [
            "",
            "| by the type's letter | " + " | ".join(AXIS_NAMES) + " |",
            "|---" * (len(AXIS_NAMES) + 1) + "|",
        ]
        for m, e in leaning:
            cells = [
                " / ".join(f"{c} {v['mean']:.2f}" for c, v in e["per_axis"][n]["by_letter"].items())
                for n in AXIS_NAMES
            ]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    drifts = [(m, e) for m, e in methods.items() if "vs_fused" in e]
    if drifts:
        lines += [
            "",
            "| sampled by | mean per-axis vs fused (paired) | target log p_1 / token vs fused | "
            "log ppl under the base vs fused | acceptance | clip rate | fallbacks / answer |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, e in drifts:
            lines.append(
                f"| {m} | {_ci(e['vs_fused'], 3)} | {_ci(e.get('target_lp_vs_fused'), 3)} | "
                f"{_ci(e['log_ppl_vs_fused'], 3)} | {e['acceptance'] if e['acceptance'] is None else round(e['acceptance'], 3)} | "
                f"{e['clip_rate'] if e['clip_rate'] is None else round(e['clip_rate'], 3)} | "
                f"{e['fallbacks_per_answer']:.2f} |"
            )
    lines += ["", "Goals: " + json.dumps(results["goals"])]
    path.write_text("\n".join(lines) + "\n")


def write_plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 2]})
    names = list(methods)
    width = 0.8 / max(len(names), 1)
    short = {
        m: m.replace(COMPOSE, "4:").replace(",weights=given,anchor=base", "").replace("plausibility", "a")
        for m in names
    }
    for j, m in enumerate(names):
        for k, n in enumerate(AXIS_NAMES):
            a = methods[m]["per_axis"].get(n)
            if a is None or a.get("mean") is None:
                continue
            if m.startswith(ONE) and not methods[m]["axis"] == AXES[k]:
                continue
            ax.bar(
                k + (j - len(names) / 2) * width,
                a["mean"],
                width,
                yerr=[[a["mean"] - a["lo"]], [a["hi"] - a["mean"]]],
                color=f"C{j % 10}",
                hatch="//" if m.startswith(ONE) else None,
                label=short[m]
                if k == (AXES.index(methods[m]["axis"]) if methods[m]["axis"] else 0)
                else None,
                capsize=2,
            )
    ax.set_xticks(range(len(AXIS_NAMES)), AXIS_NAMES)
    ax.set_ylim(0, 1.05)
    ax.axhline(0.5, color="k", lw=0.5, ls=":")
    ax.set_ylabel("judged accuracy on the axis")
    ax.legend(fontsize=5, ncol=2)
    ax.set_title(
        f"per-axis fidelity ({results['items']} items, {results['max_new_tokens']} tokens, fused)", fontsize=9
    )
    for j, m in enumerate(names):
        p = methods[m]["ppl"]
        if p.get("mean") is None:
            continue
        bx.errorbar(
            j, p["mean"], yerr=[[p["mean"] - p["lo"]], [p["hi"] - p["mean"]]], fmt="o", color=f"C{j % 10}"
        )
    bx.set_xticks(range(len(names)), [short[m] for m in names], rotation=70, ha="right", fontsize=5)
    bx.set_yscale("log")
    bx.set_ylabel("perplexity under the base")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None, *, engine=None, experts=None, judges=None, embed=None) -> int:
    """CLI entry; tests inject a tiny engine, experts (a callable) and judges."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "benchmarks/record/axes.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    engine = engine or Engine.from_pretrained(args.base, device=args.device, dtype=args.dtype)
    results = run(args, engine, experts=experts or args.experts, judges=judges, embed=embed)
    if args.generate_only:
        common.save_answers(
            out / "answers.json",
            {"freeform": results["rows"]},
            common.sampling_settings(args),
            args.device,
            command=command,
            timings_s={"freeform": results["sample_s"]},
        )
        print(f"wrote {out}/answers.json (score with --answers)", file=sys.stderr)
        return 0
    results.update(command=command, machine=common.machine_info(args.device))
    (out / "results.json").write_text(json.dumps(common.finite(results), indent=1))
    write_table(results, out / "table.md")
    write_plot(results, out / "axes.png")
    print((out / "table.md").read_text())
    print(f"wrote {out}/results.json, table.md, axes.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

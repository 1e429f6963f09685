"""Fidelity against fluency for every composition of the MBTI experts: JSON + PNG + table.

Each point is one way of imposing a type: the composed target (mpg.composition) over a grid of
aggregator x lam x weight rule x anchor x plausibility constraint, BILLY at several steering
strengths, and the single points `prompt` (the multi-trait system prompt) and `base`. Every point
answers the same free-form items (mpg.eval.freeform.mbti_items: balanced types, qa and held-out prefs
instructions) with the same seeds, sampled with `fused` (exact p_1; the fastest exact sampler here).
For every point:

- fidelity: mean per-axis judge accuracy (the MBTI judge, trained only on pairs no expert saw): each
  answer's share of its type's four letters the judge recognises, averaged over answers, with a 95%
  interval over answers (mpg.stats.bounded_mean_ci);
- fluency: perplexity of the answer under the plain base after the plain prompt (geometric mean over
  answers) and its ratio to the base's own answers' perplexity.

`chosen` in results.json is the point with the best fidelity whose perplexity stays within
--ppl-budget (1.5) times the prompt's: the rule the defaults follow (README).

    .venv/bin/python benchmarks/record/frontier.py --out out/frontier             # the documented sweep

Sampling can run elsewhere (an accelerator machine): `--generate-only --device cuda` writes every
point's answers to OUT/answers.json; `--answers FILE[,FILE...]` scores such files here (the run of
2026-11-30 in docs/results.md was sampled so).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import (  # noqa: E402
    ROOT,
    add_answers_args,
    add_layer_arg,
    add_model_args,
    add_sampling_args,
    add_vector_args,
    command_line,
    load_answers,
    machine_info,
    sampling_settings,
    save_answers,
    steered_layer,
    vectors_from_args,
    write_results,
)
from mpg import Engine  # noqa: E402
from mpg.composition import ANCHORS, WEIGHT_RULES, Composition  # noqa: E402
from mpg.eval import freeform as ff  # noqa: E402
from mpg.eval.judge import load_or_train_judges, make_embedder  # noqa: E402
from mpg.eval.methods import BILLY_AT, COMPOSE, register_merged_vector  # noqa: E402
from mpg.eval.questionnaire import TYPES  # noqa: E402
from mpg.eval.text_metrics import ppl_summary  # noqa: E402
from mpg.personas import TRAITS  # noqa: E402
from mpg.stats import bounded_mean_ci  # noqa: E402

# every pair of axes balanced (each letter pair held by 2 of the 8): no axis is confounded with another
DEFAULT_TYPES = "ENTJ,ESFP,ISTP,INFJ,ESTJ,ENFP,ISFJ,INTP"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--out", default="out/frontier")
    add_model_args(ap)
    ap.add_argument("--experts", default="shipped")
    ap.add_argument("--types", default=DEFAULT_TYPES, help="comma list of types, or 'all' (the 16)")
    ap.add_argument("--per-type", type=int, default=1, help="free-form items per type")
    add_sampling_args(ap, max_new_tokens=48)
    ap.add_argument("--lams", default="0.25,0.5,1,2")
    ap.add_argument("--aggregators", default="product,mixture")
    ap.add_argument("--weights", default="given,sum1", help=f"weight rules among {', '.join(WEIGHT_RULES)}")
    ap.add_argument("--anchors", default="base,prompt", help=f"among {', '.join(ANCHORS)}")
    ap.add_argument(
        "--plausibilities",
        default="0",
        help="plausibility constraints alpha to sweep (0: none; 0.1 is contrastive decoding's)",
    )
    ap.add_argument(
        "--compositions",
        default=None,
        help="';'-separated compositions to run instead of the grid, e.g. 'product,lam=0.5;mixture,lam=1'",
    )
    ap.add_argument("--alphas", default="1,2,4", help="BILLY steering strengths ('' to leave BILLY out)")
    add_layer_arg(ap)
    add_vector_args(ap)
    ap.add_argument("--ppl-budget", type=float, default=1.5, help="perplexity allowed, times the prompt's")
    ap.add_argument("--judges", default="out/judges")
    ap.add_argument("--embedder", default="minilm")
    add_answers_args(ap)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        args.lams = [float(x) for x in args.lams.split(",") if x.strip()]
        args.alphas = [float(x) for x in args.alphas.split(",") if x.strip()]
        args.plausibilities = [float(x) for x in args.plausibilities.split(",") if x.strip()]
    except ValueError as e:
        ap.error(f"--lams / --alphas / --plausibilities take comma-separated numbers: {e}")
    args.types = (
        list(TYPES)
        if args.types.strip().lower() == "all"
        else [t.strip().upper() for t in args.types.split(",") if t.strip()]
    )
    args.compositions = compositions(args, ap)
    return args


def compositions(args, ap) -> list[Composition]:
    """The grid, without points that coincide (the mixture normalises its weights: sum1 == given); or
    the --compositions listed."""
    if args.compositions:
        try:
            return list(
                dict.fromkeys(Composition.parse(c) for c in args.compositions.split(";") if c.strip())
            )
        except ValueError as e:
            ap.error(f"--compositions: {e}")
    out = []
    for agg, lam, rule, anchor, alpha in itertools.product(
        args.aggregators.split(","),
        args.lams,
        args.weights.split(","),
        args.anchors.split(","),
        args.plausibilities or [0.0],
    ):
        if agg.strip() == "mixture" and rule.strip() == "sum1":
            continue
        try:
            out.append(Composition(agg.strip(), lam, rule.strip(), anchor.strip(), alpha))
        except ValueError as e:
            ap.error(str(e))
    return list(dict.fromkeys(out))


def point(rows: list[dict], base_ppl: float | None) -> dict:
    """Fidelity (mean per-axis accuracy over answers, 95% CI) and fluency of one method's judged rows."""
    fidelity = bounded_mean_ci([sum(r["axis_hits"]) / 4 for r in rows])
    ppl = ppl_summary([(r["ppl"], r["ppl_tokens"]) for r in rows])
    return {
        "answers": len(rows),
        "fidelity": fidelity,
        "per_axis": ff.mbti_accuracy(rows),
        "ppl": ppl,
        "ppl_ratio_to_base": (ppl["mean"] / base_ppl) if base_ppl and ppl.get("mean") else None,
    }


def choose(points: dict, budget: float) -> str | None:
    """Best fidelity among composed points whose perplexity is within budget x the prompt's."""
    limit = points["prompt"]["ppl"]["mean"] * budget
    ok = [m for m, p in points.items() if m.startswith(COMPOSE) and p["ppl"]["mean"] <= limit]
    return max(ok, key=lambda m: points[m]["fidelity"]["mean"], default=None)


def methods_of(args) -> list[str]:
    """Every point's method name (mpg.eval.methods), in the table's order of kinds."""
    return [
        "base",
        "prompt",
        *(COMPOSE + c.name for c in args.compositions),
        *(f"{BILLY_AT}{a:g}" for a in args.alphas),
    ]


def sample(args, engine, items, *, experts, vectors=None) -> list[dict]:
    """Every point's answers to `items` (fused; billy steers with the merged persona vectors)."""
    progress = not args.no_progress
    methods = methods_of(args)
    kw = dict(
        experts=experts,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        temperature=args.temperature,
        top_p=args.top_p,
        progress=progress,
    )
    layer = steered_layer(engine, args.layer)
    if args.alphas:
        if vectors is None:
            vectors = vectors_from_args(engine, args, list(TRAITS), progress=progress)
        for t in args.types:
            register_merged_vector(engine, vectors, t)
    return ff.generate_mbti(engine, methods, items, **kw, layer=layer)


def run(args, engine, *, experts, judges=None, embed=None, vectors=None) -> dict:
    progress = not args.no_progress
    data = Path(args.data)
    t0 = time.perf_counter()
    items = ff.mbti_items(data, args.types, args.per_type)
    if args.answers:
        try:
            rows = load_answers(
                args.answers.split(","), "freeform", methods_of(args), items, sampling_settings(args)
            )
        except ValueError as e:
            raise SystemExit(f"--answers {e}") from None
    else:
        rows = sample(args, engine, items, experts=experts, vectors=vectors)
    sampled_s = time.perf_counter() - t0
    if args.generate_only:
        return {"rows": rows, "sample_s": round(sampled_s, 1)}
    if judges is None:
        embed = embed or make_embedder(args.embedder)
        judges = load_or_train_judges(data, args.judges, args.embedder, embed=embed, progress=progress)
    judge = judges[0]
    embed = embed or judge.embed
    ff.score_mbti(engine, rows, items, judge, embed, progress)
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    base_ppl = ppl_summary([(r["ppl"], r["ppl_tokens"]) for r in by_method["base"]])["mean"]
    points = {m: point(rs, base_ppl) for m, rs in by_method.items()}
    chosen = choose(points, args.ppl_budget)
    return {
        "points": points,
        "chosen": chosen,
        "ppl_budget": args.ppl_budget,
        "types": args.types,
        "items": len(items),
        "answers_per_point": len(items),
        "max_new_tokens": args.max_new_tokens,
        "sampler": "fused",
        "seed": args.seed,
        "sample_s": round(sampled_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "rows": [{k: v for k, v in r.items() if k != "token_ids"} for r in rows],
    }


def markdown(results: dict) -> str:
    """table.md: every point, best fidelity first, the chosen one marked."""
    lines = [
        "| point | fidelity (mean per-axis judge accuracy) [95% CI] | E/I | S/N | T/F | J/P | ppl | ppl / base |",
        "|---|---|---|---|---|---|---|---|",
    ]
    points = results["points"]
    for m in sorted(points, key=lambda m: -points[m]["fidelity"]["mean"]):
        p = points[m]
        f = p["fidelity"]
        axes = " | ".join(f"{p['per_axis'][a]['mean']:.2f}" for a in ("E/I", "S/N", "T/F", "J/P"))
        mark = " **(chosen)**" if m == results["chosen"] else ""
        ratio = p["ppl_ratio_to_base"]
        lines.append(
            f"| {m}{mark} | {f['mean']:.3f} [{f['lo']:.2f}, {f['hi']:.2f}] | {axes} | "
            f"{p['ppl']['mean']:.2f} | {ratio:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for m, p in results["points"].items():
        f, x = p["fidelity"], p["ppl_ratio_to_base"]
        kind = "composed" if m.startswith(COMPOSE) else "billy" if m.startswith("billy") else m
        style = {"composed": ("o", "C0"), "billy": ("s", "C2"), "prompt": ("*", "C3"), "base": ("X", "k")}[
            kind
        ]
        ax.errorbar(
            x,
            f["mean"],
            yerr=[[f["mean"] - f["lo"]], [f["hi"] - f["mean"]]],
            fmt=style[0],
            color=style[1],
            alpha=0.8,
            ms=9 if kind in ("prompt", "base") else 5,
        )
        label = (
            m.removeprefix(COMPOSE)
            .replace(",weights=", " ")
            .replace(",anchor=", " ")
            .replace(",lam=", " ")
            .replace(",plausibility=", " alpha ")
        )
        ax.annotate(label, (x, f["mean"]), fontsize=5.5, alpha=0.8, xytext=(3, 2), textcoords="offset points")
    limit = results["points"]["prompt"]["ppl_ratio_to_base"] * results["ppl_budget"]
    ax.axvline(limit, ls="--", color="C3", lw=0.8, label=f"{results['ppl_budget']}x the prompt's perplexity")
    ax.set_xscale("log")
    ax.set_xlabel("perplexity under the base, relative to the base's own answers (log)")
    ax.set_ylabel("mean per-axis judge accuracy")
    ax.set_title(
        f"persona fidelity vs fluency: {len(results['types'])} types x {results['items'] // len(results['types'])} "
        f"items, {results['max_new_tokens']} tokens, fused",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None, *, engine=None, experts=None, judges=None, embed=None, vectors=None) -> int:
    """CLI entry; tests inject a tiny engine, experts (callable), judges and persona vectors."""
    args = parse_args(argv)
    out = Path(args.out)
    command = command_line(__file__, argv)
    engine = engine or Engine.from_pretrained(args.base, device=args.device, dtype="float32")
    results = run(args, engine, experts=experts or args.experts, judges=judges, embed=embed, vectors=vectors)
    if args.generate_only:
        save_answers(
            out / "answers.json",
            {"freeform": results["rows"]},
            sampling_settings(args),
            args.device,
            command=command,
            timings_s={"freeform": results["sample_s"]},
        )
        print(f"wrote {out}/answers.json (score with --answers)", file=sys.stderr)
        return 0
    results.update(command=command, machine=machine_info(args.device))
    write_results(out, results, markdown(results))
    write_plot(results, out / "frontier.png")
    print(f"chosen: {results['chosen']}; wrote {out}/results.json, table.md, frontier.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

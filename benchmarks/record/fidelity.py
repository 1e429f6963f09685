"""Persona fidelity of every method, three ways, on the default model and the shipped experts.

1. Questionnaire (mpg.eval.questionnaire): the 16Personalities items answered Agree/Disagree by
   likelihood under each method for each of --types; per-axis and full-type accuracy.
2. MBTI free-form (mpg.eval.freeform): each method answers the same prompts with the same seeds
   under --freeform-types; the independent MBTI judge (mpg.eval.judge, trained only on preference
   pairs the experts never saw) reads the answers: per-axis and full-type accuracy; plus perplexity
   under the plain base, distinct-1/2, tokens/s.
3. Role-play free-form: the first --roleplay profiles of roleplay/test.jsonl, the role-play methods;
   the independent role-play judge's p(in persona), cosine to the reference answers, perplexity.

Methods come from mpg.eval.methods (MBTI parts use MBTI_METHODS, role-play ROLEPLAY_METHODS);
billy steers with the merged persona vectors of the type's letters, loaded from --vectors (extracted
there first if missing). Writes results.json (every answer, scores, CIs, timings, the command,
machine), table.md and plot.png under --out.

    .venv/bin/python benchmarks/record/fidelity.py
"""

from __future__ import annotations

import argparse
import json
import math
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
from mpg.distributed import current_shard  # noqa: E402
from mpg.eval import freeform as ff  # noqa: E402
from mpg.eval.judge import load_or_train_judges, make_embedder, report_markdown  # noqa: E402
from mpg.eval.methods import (  # noqa: E402
    BILLY_AT,
    COMPOSE,
    MBTI_METHODS,
    METHODS,
    ONE,
    ROLEPLAY_METHODS,
    VIA,
    get_method,
    register_merged_vector,
)
from mpg.eval.questionnaire import TYPES, load_questionnaire, run_questionnaire, style_items  # noqa: E402
from mpg.personas import AXES, TRAITS  # noqa: E402
from mpg.stats import bounded_mean_ci, paired_bootstrap_ci  # noqa: E402

PARTS = ("questionnaire", "style", "freeform", "roleplay")
AXIS_NAMES = [f"{a[0]}/{a[1]}" for a in AXES]
SPEC_PREFIXES = (COMPOSE, VIA, ONE, BILLY_AT)  # MBTI methods named by a spec (mpg.eval.methods.get_method)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"), help="the shared data folder")
    ap.add_argument("--out", default="out/fidelity")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    ap.add_argument(
        "--parts",
        default="questionnaire,freeform,roleplay",
        help=f"comma list of {', '.join(PARTS)} (style: the two-option style test, not run by default)",
    )
    ap.add_argument(
        "--items", type=int, default=None, help="questionnaire: the first N items (default: all 60)"
    )
    ap.add_argument("--types", default="all", help="questionnaire: comma list of types, or 'all' (the 16)")
    ap.add_argument(
        "--freeform-types",
        default=",".join(ff.DEFAULT_TYPES),
        help="MBTI free-form target types, or 'all' (the 16)",
    )
    ap.add_argument(
        "--style-per-axis", type=int, default=8, help="style test: held-out pairs per axis (part 'style')"
    )
    ap.add_argument("--freeform-per-type", type=int, default=4, help="MBTI free-form prompts per target type")
    ap.add_argument(
        "--freeform-skip",
        type=int,
        default=0,
        help="leave out each type's first N free-form prompts (e.g. those a frontier run chose on)",
    )
    ap.add_argument(
        "--roleplay", type=int, default=10, help="role-play profiles (first N of roleplay/test.jsonl)"
    )
    add_sampling_args(ap, max_new_tokens=64)
    add_model_args(ap)
    ap.add_argument("--dtype", default="float32", help="the engine's dtype: float32 (default) or bfloat16")
    ap.add_argument(
        "--experts", default="shipped", help="'shipped', 'prompted' or a folder of expert adapters"
    )
    add_vector_args(ap)  # billy's: the 8 MBTI letters
    add_layer_arg(ap)
    ap.add_argument("--alpha", type=float, default=2.0, help="billy's steering strength")
    ap.add_argument("--no-billy", action="store_true", help="leave billy out (no persona vectors needed)")
    ap.add_argument("--judges", default="out/judges", help="judge cache folder (trained there if missing)")
    ap.add_argument(
        "--embedder", default="minilm", help="judges' and cosine's embedder: 'minilm' or 'hash<dim>'"
    )
    add_answers_args(ap)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    args.methods = [  # compose: and billy: names in their canonical spelling (what answers are keyed by)
        get_method(m).name if m.startswith(SPEC_PREFIXES) else m
        for m in _names(
            ap,
            args.methods,
            METHODS,
            "method",
            allow=lambda m: m.startswith(SPEC_PREFIXES),
        )
    ]
    args.parts = _names(ap, args.parts, PARTS, "part")
    args.types = list(TYPES) if args.types.strip().lower() == "all" else _types(ap, args.types)
    args.freeform_types = (
        list(TYPES) if args.freeform_types.strip().lower() == "all" else _types(ap, args.freeform_types)
    )
    for name in ("items", "freeform_per_type", "freeform_skip", "roleplay", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < (1 if name in ("items", "max_new_tokens") else 0):
            ap.error(
                f"--{name.replace('_', '-')} must be >= {1 if name in ('items', 'max_new_tokens') else 0}"
            )
    return args


def _names(ap, spec: str, allowed, what: str, allow=lambda name: False) -> list[str]:
    """Comma list -> names; `allow` admits names outside `allowed` (compose:SPEC methods, which take commas
    themselves: a part after a compose: name that is not a known name continues its spec)."""
    names: list[str] = []
    for part in (m.strip() for m in spec.split(",")):
        if not part:
            continue
        if names and allow(names[-1]) and part not in allowed and not allow(part):
            names[-1] += "," + part
        else:
            names.append(part)
    for m in names:
        if allow(m):
            try:
                get_method(m)
            except ValueError as e:
                ap.error(str(e))
    bad = [m for m in names if m not in allowed and not allow(m)]
    if bad or not names:
        ap.error(f"unknown {what}(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(allowed)}")
    return names


def _types(ap, spec: str) -> list[str]:
    types = [t.strip().upper() for t in spec.split(",") if t.strip()]
    bad = [
        t
        for t in types
        if len(t) != 4 or any(c not in TRAITS for c in t) or any(sum(c in a for c in t) != 1 for a in AXES)
    ]
    if bad or not types:
        ap.error(
            f"bad MBTI type(s) {', '.join(bad) or '(none given)'}: give four-letter types such as ENTJ,INFP"
        )
    return types


def _billy(engine, args, methods: list[str], types: list[str], log) -> tuple[list[str], object]:
    """(methods without billy if it cannot run, persona vectors or None); merged vectors registered."""
    steered = [m for m in methods if get_method(m).kind == "steered"]
    if not steered or not types:
        return methods, None
    if args.no_billy:
        log("billy skipped: --no-billy")
        return [m for m in methods if m not in steered], None
    vectors = current_shard().main_first(
        lambda: vectors_from_args(engine, args, list(TRAITS), progress=not args.no_progress)
    )
    for t in types:
        register_merged_vector(engine, vectors, t)
    return methods, vectors


def run(
    args, engine, *, experts="shipped", roleplay_experts="shipped", judges=None, embed=None, log=print
) -> dict:
    """Every part of the comparison; the results dict that results.json holds. experts /
    roleplay_experts: as in mpg.eval.methods (a name, a folder or a callable)."""
    data = Path(args.data)
    progress = not args.no_progress
    n_layers = engine.models["base"].config.num_hidden_layers
    layer = steered_layer(engine, args.layer)
    mbti_methods = [m for m in args.methods if m in MBTI_METHODS or m.startswith(SPEC_PREFIXES)]
    rp_methods = [m for m in args.methods if m in ROLEPLAY_METHODS or m.startswith(COMPOSE)]
    if args.generate_only:  # sampling only: the parts scored by judges, without the judges
        args.parts = [p for p in args.parts if p in ("freeform", "roleplay")]
    if judges is None and ({"freeform", "roleplay"} & set(args.parts)) and not args.generate_only:
        embed = embed or make_embedder(args.embedder)
        judges = current_shard().main_first(
            lambda: load_or_train_judges(data, args.judges, args.embedder, embed=embed, progress=progress)
        )
    if judges is not None:
        embed = embed or judges[0].embed
    billy_types = (args.types if {"questionnaire", "style"} & set(args.parts) else []) + (
        args.freeform_types if "freeform" in args.parts and not args.answers else []
    )
    mbti_methods, vectors = _billy(engine, args, mbti_methods, list(dict.fromkeys(billy_types)), log)
    results: dict = {"parts": {}, "timings_s": {}}
    if judges is not None:
        results["judges"] = {
            "mbti": judges[0].report,
            "roleplay": judges[1].report,
            "embedder": judges[0].embedder,
        }

    if "questionnaire" in args.parts and mbti_methods:
        t0 = time.perf_counter()
        items = load_questionnaire(data / "mbti" / "questionnaire_16p.json")
        results["parts"]["questionnaire"] = run_questionnaire(
            engine,
            mbti_methods,
            args.types,
            items,
            experts=experts,
            vectors=vectors,
            layer=layer,
            alpha=args.alpha,
            max_items=args.items,
            progress=progress,
        )
        results["timings_s"]["questionnaire"] = time.perf_counter() - t0

    if "style" in args.parts and mbti_methods:
        t0 = time.perf_counter()
        results["parts"]["style"] = run_questionnaire(
            engine,
            mbti_methods,
            args.types,
            style_items(data, args.style_per_axis),
            experts=experts,
            vectors=vectors,
            layer=layer,
            alpha=args.alpha,
            progress=progress,
        )
        results["timings_s"]["style"] = time.perf_counter() - t0

    sampling = dict(
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        temperature=args.temperature,
        top_p=args.top_p,
        progress=progress,
    )
    if "freeform" in args.parts and mbti_methods:
        t0 = time.perf_counter()
        items = ff.mbti_items(data, args.freeform_types, args.freeform_per_type, args.freeform_skip)
        rows = _answers(
            args,
            "freeform",
            mbti_methods,
            items,
            lambda: ff.generate_mbti(
                engine,
                mbti_methods,
                items,
                experts=experts,
                layer=layer,
                alpha=args.alpha,
                **sampling,
            ),
        )
        if args.generate_only:
            results["parts"]["freeform"] = {"answers": rows}
        else:
            summary = ff.score_mbti(engine, rows, items, judges[0], embed, progress=progress)
            paired_comparison(rows, summary, baseline="prompt", seed=args.seed)
            results["parts"]["freeform"] = {
                "types": args.freeform_types,
                "items": len(items),
                "methods": summary,
                "answers": rows,
            }
        results["timings_s"]["freeform"] = time.perf_counter() - t0

    if "roleplay" in args.parts and rp_methods and args.roleplay:
        t0 = time.perf_counter()
        items = ff.roleplay_items(data, args.roleplay)
        rows = _answers(
            args,
            "roleplay",
            rp_methods,
            items,
            lambda: ff.generate_roleplay(
                engine,
                rp_methods,
                items,
                experts=roleplay_experts,
                **sampling,
            ),
        )
        if args.generate_only:
            results["parts"]["roleplay"] = {"answers": rows}
        else:
            contexts = ff.roleplay_contexts(engine, items, experts=roleplay_experts)
            summary = ff.score_roleplay(engine, rows, items, judges[1], embed, contexts, progress=progress)
            paired_roleplay(rows, summary, baseline="base", seed=args.seed)
            results["parts"]["roleplay"] = {"items": len(items), "methods": summary, "answers": rows}
        results["timings_s"]["roleplay"] = time.perf_counter() - t0
    results["config"] = {
        **{k: v for k, v in vars(args).items()},
        "layer": layer,
        "n_layers": n_layers,
        "methods_run": {"mbti": mbti_methods, "roleplay": rp_methods},
        "model": str(getattr(engine.models["base"].config, "_name_or_path", "")),
    }
    return results


def _answers(args, part: str, methods: list[str], items: list, sample) -> list[dict]:
    """The part's answers, one per (method, item) in that order: `sample()`d here, or read from the
    --answers file of a --generate-only run (`load_answers`: every one, the same settings)."""
    if not args.answers:
        return sample()
    try:
        return load_answers(
            args.answers.split(","),
            part,
            methods,
            items,
            sampling_settings(args, alpha="billy" in args.methods),
        )
    except ValueError as e:
        raise SystemExit(f"--answers {e}") from None


def paired_comparison(rows: list[dict], summary: dict, baseline: str = "prompt", seed: int = 0) -> None:
    """Per method: mean per-axis accuracy over answers ("mean_axis", t interval), and its paired
    difference to `baseline` on the same (type, question, seed) items with a 95% bootstrap interval
    ("vs_<baseline>", relative = difference / baseline's mean). In place, into `summary`."""
    score = {(r["method"], r["id"]): sum(r["axis_hits"]) / 4 for r in rows}
    for m in summary:
        mine = [r["id"] for r in rows if r["method"] == m]
        if mine:
            summary[m]["mean_axis"] = bounded_mean_ci([score[(m, i)] for i in mine])
    paired_to_baseline(score, rows, summary, baseline, seed)


def paired_roleplay(rows: list[dict], summary: dict, baseline: str = "base", seed: int = 0) -> None:
    """Per method: the paired difference of its role-play judge score to `baseline` (the role-play
    prompt alone) on the same profiles and seeds, 95% bootstrap ("vs_<baseline>"). In place."""
    score = {(r["method"], r["id"]): r["judge_score"] for r in rows if r.get("judge_score") is not None}
    paired_to_baseline(score, rows, summary, baseline, seed)


def paired_to_baseline(score: dict, rows: list[dict], summary: dict, baseline: str, seed: int) -> None:
    """summary[m]["vs_<baseline>"]: method m's paired difference to `baseline` over the items both
    answered (score: {(method, id): value}), for every method that shares all its items with it."""
    for m in summary:
        mine = [r["id"] for r in rows if r["method"] == m]
        if mine and m != baseline and all((baseline, i) in score and (m, i) in score for i in mine):
            summary[m][f"vs_{baseline}"] = paired_bootstrap_ci(
                [score[(m, i)] for i in mine], [score[(baseline, i)] for i in mine], seed=seed
            )


# ---- table and plot -----------------------------------------------------------------------------
def _ci(c: dict | None, digits: int = 2) -> str:
    if not c or c.get("mean") is None:
        return "–"
    return f"{c['mean']:.{digits}f} [{c['lo']:.{digits}f}, {c['hi']:.{digits}f}]"


def _q(m: dict, axis: str | None) -> dict:
    """A questionnaire accuracy entry as {mean, lo, hi}."""
    e = m["full_type"] if axis is None else m["per_axis"].get(axis)
    return {"mean": e["acc"], "lo": e["ci95"][0], "hi": e["ci95"][1]} if e else {"mean": None}


def table_rows(results: dict) -> list[dict]:
    """One dict of CIs per method (and 'reference'), across the parts."""
    parts = results["parts"]
    q = parts.get("questionnaire", {}).get("methods", {})
    st = parts.get("style", {}).get("methods", {})
    f = parts.get("freeform", {}).get("methods", {})
    r = parts.get("roleplay", {}).get("methods", {})
    out = []
    for m in dict.fromkeys([*q, *st, *f, *r]):
        row = {"method": m}
        if m in st:
            row.update({f"sc {n}": _q(st[m]["calibrated"], a) for n, a in zip(AXIS_NAMES, AXES)})
        if m in q:
            row.update(
                {f"q {n}": _q(q[m], a) for n, a in zip(AXIS_NAMES, AXES)}, **{"q type": _q(q[m], None)}
            )
            if "calibrated" in q[m]:
                cal = q[m]["calibrated"]
                row.update(
                    {f"qc {n}": _q(cal, a) for n, a in zip(AXIS_NAMES, AXES)}, **{"qc type": _q(cal, None)}
                )
        if m in f:
            row.update({f"ff {n}": f[m][n] for n in AXIS_NAMES}, **{"ff type": f[m]["type"]})
            row.update({"ff mean axis": f[m].get("mean_axis"), "ff vs prompt": f[m].get("vs_prompt")})
            row.update(
                {
                    "ff ppl": f[m].get("ppl"),
                    "ff distinct-1": f[m]["distinct_1_per_answer"],
                    "ff distinct-2": f[m]["distinct_2_per_answer"],
                    "ff tok/s": f[m].get("tokens_per_s"),
                }
            )
        if m in r:
            row.update(
                {
                    "rp judge": r[m]["judge_score"],
                    "rp vs base": r[m].get("vs_base"),
                    "rp cos ref": r[m].get("reference_cosine"),
                    "rp ppl": r[m].get("ppl"),
                    "rp tok/s": r[m].get("tokens_per_s"),
                }
            )
        out.append(row)
    return out


MAIN_COLUMNS = [
    *(f"qc {n}" for n in AXIS_NAMES),
    "qc type",
    *(f"sc {n}" for n in AXIS_NAMES),
    *(f"ff {n}" for n in AXIS_NAMES),
    "ff type",
    "ff mean axis",
    "ff vs prompt",
    "ff ppl",
    "ff distinct-1",
    "ff distinct-2",
    "rp judge",
    "rp vs base",
]
EXTRA_COLUMNS = [*(f"q {n}" for n in AXIS_NAMES), "q type", "ff tok/s", "rp cos ref", "rp ppl", "rp tok/s"]


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, dict):
        return _ci(v)
    return f"{v:.2f}" if isinstance(v, float) and math.isfinite(v) else str(v)


def markdown(results: dict) -> str:
    """table.md: one row per method (main and extra columns), the notes and the judges' accuracy."""
    rows = table_rows(results)
    lines = ["| method | " + " | ".join(MAIN_COLUMNS) + " |", "|---" * (len(MAIN_COLUMNS) + 1) + "|"]
    lines += [f"| {r['method']} | " + " | ".join(_cell(r.get(c)) for c in MAIN_COLUMNS) + " |" for r in rows]
    lines += ["", "| method | " + " | ".join(EXTRA_COLUMNS) + " |", "|---" * (len(EXTRA_COLUMNS) + 1) + "|"]
    lines += [f"| {r['method']} | " + " | ".join(_cell(r.get(c)) for c in EXTRA_COLUMNS) + " |" for r in rows]
    notes = [
        "",
        "qc: calibrated questionnaire accuracy (each item's Agree-Disagree margin minus its mean over the "
        "types asked: mpg.eval.questionnaire.calibrate; Wilson 95% CI; per axis over types x items, type "
        "over types); q (second table): the raw answers. sc: the style test (two held-out answers per "
        "item, one in each side's style, calibrated the same way). "
        "ff: MBTI free-form, judged by the independent MBTI judge (Wilson 95% CI over answers); mean axis: "
        "each answer's share of its type's letters judged right, mean [t 95% CI]; vs prompt: paired "
        "difference of that share to `prompt` on the same items and seeds [bootstrap 95% CI]; ppl: "
        "perplexity under the plain base (geometric mean [95% CI]); distinct-n: per-answer mean [95% CI]. "
        "rp judge: role-play judge p(in persona), mean [95% CI]; rp vs base: paired difference of it to "
        "`base` (the role-play prompt alone) on the same profiles and seeds [bootstrap 95% CI]; rp cos "
        "ref: MiniLM cosine to the reference answer. 'reference': the judges on the data's reference "
        "answers.",
    ]
    if "judges" in results:
        notes += [
            "",
            f"Judges' held-out accuracy ({results['judges']['embedder']} embeddings, test splits):",
            "",
            report_markdown(results["judges"]["mbti"], results["judges"]["roleplay"]),
        ]
    return "\n".join(lines + notes) + "\n"


def write_plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table_rows(results)
    panels = [
        ("qc type", "questionnaire (calibrated): full-type accuracy"),
        ("ff type", "free-form: judged full-type accuracy"),
        ("ff E/I", "free-form: judged E/I accuracy"),
        ("rp judge", "role-play: judge p(in persona)"),
    ]
    panels = [p for p in panels if any(r.get(p[0]) for r in rows)]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 4.2), squeeze=False)
    for ax, (key, name) in zip(axes[0], panels):
        mine = [r for r in rows if r.get(key) and r[key].get("mean") is not None]
        means = [r[key]["mean"] for r in mine]
        err = [
            [r[key]["mean"] - r[key]["lo"] for r in mine],
            [r[key]["hi"] - r[key]["mean"] for r in mine],
        ]  # [2, M]
        ax.bar(range(len(mine)), means, yerr=err, capsize=3, color=[f"C{i % 10}" for i in range(len(mine))])
        ax.set_xticks(range(len(mine)), [r["method"] for r in mine], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None, *, engine=None, experts=None, roleplay_experts=None, judges=None, embed=None) -> int:
    """CLI entry; tests inject a tiny `engine`, `experts` / `roleplay_experts` callables and `judges`
    (an (MbtiJudge, RoleplayJudge) pair); by default the --base model, --experts and cached judges."""
    args = parse_args(argv)
    out_dir = Path(args.out)
    t0 = time.perf_counter()
    if engine is None:
        engine = Engine.from_pretrained(args.base, device=args.device, dtype=args.dtype)
    results = run(
        args,
        engine,
        experts=experts or args.experts,
        roleplay_experts=roleplay_experts or args.experts,
        judges=judges,
        embed=embed,
        log=lambda s: print(s, file=sys.stderr),
    )
    shard = current_shard()
    results.update(
        command=command_line(__file__, argv),
        machine=machine_info(args.device),
        total_wall_s=time.perf_counter() - t0,
    )
    results["processes"] = shard.world_size
    if not shard.is_main:  # every process holds the gathered results; the main one writes them
        return 0
    if args.generate_only:
        parts = {k: v["answers"] for k, v in results.pop("parts").items()}
        save_answers(
            out_dir / "answers.json",
            parts,
            sampling_settings(args, alpha="billy" in args.methods),
            **results,
            device=args.device,
        )
        print(f"wrote {out_dir}/answers.json (score with --answers)", file=sys.stderr)
        return 0
    if args.answers:  # where the answers were sampled (their tokens/s are those machines')
        results["answers_from"] = []
        for path in args.answers.split(","):
            saved = json.loads(Path(path).read_text())
            results["answers_from"].append(
                {"file": path, **{k: saved.get(k) for k in ("command", "machine", "device", "timings_s")}}
            )
    write_results(out_dir, results, markdown(results))
    write_plot(
        results,
        out_dir / "plot.png",
        f"persona fidelity, seed {args.seed}, "
        f"{args.max_new_tokens} new tokens, {results['config']['model'][-40:]}",
    )
    print(f"wrote {out_dir}/results.json, table.md, plot.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

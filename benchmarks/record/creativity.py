"""BILLY's creativity benchmark (Pai et al., EACL 2026), offline and judge-free.

Four ways to make one base model answer the divergent-thinking tasks of LLM Discussion (AUT,
Instances, Similarities, Scientific), with the same prompts, sampling settings and seeds:

- single           the base model under its plain prompt;
- multi_role       one system prompt naming all three creative roles (BILLY's multi-persona baseline);
- merged_steering  BILLY: the base steered with the average of the three role vectors at --layer/--alpha;
- mpg              MPG: the three roles as prompted attributes (role prompt over neutral prompt).

Each answer is scored with mpg.eval.creativity (fluency, SemDis originality, flexibility); per
method: mean and 95% CI over items, wall time, tokens, tokens/s. Writes results.json, table.md and
plot.png under --out.

    .venv/bin/python benchmarks/record/creativity.py --per-task 5 --max-new-tokens 128
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import (  # noqa: E402
    ROOT,
    add_layer_arg,
    add_model_args,
    add_sampling_args,
    add_vector_args,
    command_line,
    machine_info,
    steered_layer,
    vectors_from_args,
    write_results,
)
from mpg import Attribute, Engine, Policy, Steer, Target  # noqa: E402
from mpg.distributed import current_shard  # noqa: E402
from mpg.eval.creativity import hash_embedder, minilm_embedder, score_answer  # noqa: E402
from mpg.extract import CREATIVE_ROLES, NEUTRAL_PROMPTS  # noqa: E402
from mpg.samplers import SAMPLERS  # noqa: E402
from mpg.stats import mean_ci  # noqa: E402

TASKS = ("aut", "instances", "similarities", "scientific")
METHODS = ("single", "multi_role", "merged_steering", "mpg")
SCORES = ("fluency", "originality", "flexibility")
MERGED = "creative_merged"  # name of the merged steering vector on the engine

# One system prompt holding all three roles: each role's first prompt from CREATIVE_ROLES.
MULTI_ROLE_PROMPT = "You take on three roles at once. " + " ".join(p[0] for p in CREATIVE_ROLES.values())


def load_items(path: str | Path, per_task: int) -> list[dict]:
    """The first `per_task` items of each task type, in file order: {task, prompt[, object]}."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    items = [r for task in TASKS for r in [r for r in rows if r["task"] == task][:per_task]]
    if not items:
        raise ValueError(f"{path} has no items of the tasks {', '.join(TASKS)}")
    return items


def cue(item: dict) -> str:
    """What originality is measured from: the object for AUT, else the whole prompt."""
    return item.get("object") or item["prompt"]


def single_policy_target(policy: Policy) -> Target:
    """Target equal to one policy (Target.single): one row, nothing composed."""
    return Target.single(policy)


def method_targets(engine: Engine, args, methods: list[str]) -> dict[str, tuple[Target, str]]:
    """method -> (target, sampler). The single-policy methods use `fused`, exact for one policy."""
    out = {}
    if "single" in methods:
        out["single"] = (single_policy_target(Policy()), "fused")
    if "multi_role" in methods:
        out["multi_role"] = (single_policy_target(Policy(system=MULTI_ROLE_PROMPT)), "fused")
    if "merged_steering" in methods:
        # under accelerate launch: the main process extracts and saves, the others then load
        vectors = current_shard().main_first(lambda: vectors_from_args(engine, args, list(CREATIVE_ROLES)))
        merged = vectors.merge(list(CREATIVE_ROLES))  # [n_layers, H]
        engine.add_steering_vector(MERGED, merged)
        out["merged_steering"] = (
            single_policy_target(Policy(steering=Steer(MERGED, args.layer, args.alpha))),
            "fused",
        )
    if "mpg" in methods:
        attrs = tuple(
            Attribute.prompted(prompts[0], NEUTRAL_PROMPTS[0], name=role)
            for role, prompts in CREATIVE_ROLES.items()
        )
        out["mpg"] = (Target(attrs, args.aggregator, args.lam), args.mpg_sampler)
    return out


def run(engine: Engine, targets: dict[str, tuple[Target, str]], items: list[dict], embed, args) -> list[dict]:
    """Generate and score every (method, item); one row each. Under `accelerate launch` each process
    answers its share of the (method, item) pairs (mpg.distributed); every process gets all rows."""
    units = [(method, j) for method in targets for j in range(len(items))]
    shard = current_shard()
    mine = shard.mine(units)
    bar = tqdm(total=len(mine), desc="creativity", unit="answer")

    def answer(method: str, j: int) -> dict:
        (target, sampler), item = targets[method], items[j]
        bar.set_postfix_str(f"{method} {item['task']}")
        out = engine.generate(
            item["prompt"],
            target=target,
            sampler=sampler,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed * 100_003 + j,
        )
        scores = score_answer(out.texts[0], item["prompt"], cue(item), embed)
        bar.update()
        return {
            "method": method,
            "task": item["task"],
            "item": j,
            "prompt": item["prompt"],
            "text": out.texts[0],
            **scores,
            "new_tokens": out.stats[0].new_tokens,
            "wall_time_s": out.stats[0].wall_time_s,
        }

    rows = shard.gather([(i, answer(*unit)) for i, unit in mine])
    bar.close()
    return rows


def summarise(rows: list[dict], methods: list[str]) -> dict:
    """Per method: each score's mean/CI over items (and per task), tokens, wall time, tokens/s."""
    summary = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        tokens, wall = sum(r["new_tokens"] for r in mine), sum(r["wall_time_s"] for r in mine)
        summary[method] = {
            **{s: mean_ci([r[s] for r in mine]) for s in SCORES},
            "per_task": {
                t: {s: mean_ci([r[s] for r in mine if r["task"] == t])["mean"] for s in SCORES}
                for t in TASKS
                if any(r["task"] == t for r in mine)
            },
            "items": len(mine),
            "new_tokens": tokens,
            "wall_time_s": wall,
            "tokens_per_s": tokens / wall if wall > 0 else None,
        }
    return summary


def _fmt(ci: dict) -> str:
    return "n/a" if ci["mean"] is None else f"{ci['mean']:.2f} [{ci['lo']:.2f}, {ci['hi']:.2f}]"


def markdown(summary: dict) -> str:
    """table.md: per method, each score's mean [95% CI] over items, tokens, wall time, tokens/s."""
    lines = [
        "| method | fluency | originality | flexibility | tokens | wall s | tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, m in summary.items():
        tps = "n/a" if m["tokens_per_s"] is None else f"{m['tokens_per_s']:.1f}"
        lines.append(
            f"| {method} | {_fmt(m['fluency'])} | {_fmt(m['originality'])} | {_fmt(m['flexibility'])} "
            f"| {m['new_tokens']} | {m['wall_time_s']:.1f} | {tps} |"
        )
    return "\n".join(lines) + "\n\nMean [95% CI] over items.\n"


def write_plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary)
    fig, axes = plt.subplots(1, len(SCORES), figsize=(4 * len(SCORES), 3.6))
    for ax, score in zip(axes, SCORES):
        cis = [summary[m][score] for m in methods]
        means = [c["mean"] if c["mean"] is not None else 0.0 for c in cis]
        err = [
            [c["mean"] - c["lo"] if c["mean"] is not None else 0.0 for c in cis],
            [c["hi"] - c["mean"] if c["mean"] is not None else 0.0 for c in cis],
        ]  # [2, n_methods]
        ax.bar(range(len(methods)), means, yerr=err, capsize=4, color=[f"C{i}" for i in range(len(methods))])
        for x, c in enumerate(cis):
            if c["mean"] is None:  # no item had an idea to score
                ax.annotate("n/a", (x, 0), ha="center", va="bottom")
        ax.set_xticks(range(len(methods)), methods, rotation=20)
        ax.set_title(score)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=str(ROOT.parent / "shared/data/creativity/tasks.jsonl"))
    ap.add_argument(
        "--per-task",
        type=int,
        default=5,
        help="items per task type (aut, instances, similarities, scientific)",
    )
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    add_model_args(ap)
    add_sampling_args(ap, max_new_tokens=128)
    add_vector_args(ap)  # the 3 creative roles (`mpg extract-vectors --personas mbti,creative` writes them)
    add_layer_arg(ap)
    ap.add_argument("--alpha", type=float, default=2.0, help="steering strength (BILLY's code: 2.0)")
    ap.add_argument("--mpg-sampler", default="fused", choices=sorted(SAMPLERS))
    ap.add_argument("--aggregator", default="product", choices=["product", "mixture"])
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--embedder", default="minilm", choices=["minilm", "hash"])
    ap.add_argument("--out", default="out/creativity")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        ap.error(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}"
        )
    if args.per_task < 1:
        ap.error("--per-task must be >= 1")
    args.methods = methods
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out)
    items = load_items(args.tasks, args.per_task)
    engine = Engine.from_pretrained(args.base, device=args.device, dtype="float32")
    n_layers = engine.models["base"].config.num_hidden_layers
    args.layer = steered_layer(engine, args.layer)
    embed = minilm_embedder(args.device) if args.embedder == "minilm" else hash_embedder()
    targets = method_targets(engine, args, args.methods)

    t0 = time.perf_counter()
    rows = run(engine, targets, items, embed, args)
    summary = summarise(rows, args.methods)
    config = dict(vars(args))
    config.update(
        n_layers=n_layers,
        model=str(getattr(engine.models["base"].config, "_name_or_path", "")),
        multi_role_prompt=MULTI_ROLE_PROMPT,
        samplers={m: s for m, (_, s) in targets.items()},
        machine=machine_info(args.device),
        command=command_line(__file__, argv),
        total_wall_s=time.perf_counter() - t0,
        processes=current_shard().world_size,
    )
    if not current_shard().is_main:  # every process holds all rows; the main one writes them
        return 0
    write_results(out_dir, {"config": config, "methods": summary, "items": rows}, markdown(summary))
    write_plot(
        summary,
        out_dir / "plot.png",
        f"creativity, {len(items)} items, {args.embedder} embedder, layer {args.layer}, alpha {args.alpha:g}",
    )
    print(f"wrote {out_dir}/results.json, table.md, plot.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

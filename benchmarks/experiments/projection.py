"""BILLY's projection analysis: per layer, the activation change (condition minus plain) projected
onto each unit persona vector, for a multi-role system prompt, merged-vector steering and each
single vector's steering (SPEC section 5).

    .venv/bin/python benchmarks/experiments/projection.py --layer 20 --alpha 2 --prompts 8

Writes <out>/projection.json and <out>/projection.png (one subplot per persona vector, one line per
condition). Vectors come from --vectors (extracted there first for the personas it lacks).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import (  # noqa: E402
    add_layer_arg,
    add_steering_args,
    command_line,
    machine_info,
    persona_prompts,
    steered_layer,
    steering_inputs,
    write_json,
)
from mpg.eval.steering.profile import multi_role_prompt, projection_profile  # noqa: E402
from mpg.extract import CREATIVE_ROLES  # noqa: E402


def plot_profile(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names, layers = result["names"], list(range(result["n_layers"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        for cond, per_name in result["conditions"].items():
            ax.plot(layers, per_name[name], marker=".", label=cond.replace("single:", "only "))
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axvline(result["layer"], color="grey", linestyle="--", linewidth=0.8)  # the steered block
        ax.set_title(f"onto {name}", fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_ylabel("projection of activation change")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle(f"steering at layer {result['layer']}, alpha {result['alpha']:g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--personas",
        default=",".join(CREATIVE_ROLES),
        help="comma-separated persona names (creative roles or MBTI letters); all are merged",
    )
    add_layer_arg(ap)
    ap.add_argument("--alpha", type=float, default=2.0)
    ap.add_argument(
        "--multi-role-prompt",
        default=None,
        help="system prompt naming every role (default: each persona's first prompt, joined)",
    )
    add_steering_args(ap, out="out/projection")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    names = [n.strip() for n in args.personas.split(",") if n.strip()]
    engine, vectors, prompts = steering_inputs(args, names)
    args.layer = steered_layer(engine, args.layer)
    system = args.multi_role_prompt or multi_role_prompt(persona_prompts(names), names)
    result = projection_profile(
        engine,
        vectors,
        names,
        system,
        prompts,
        args.layer,
        args.alpha,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    result.update(
        {
            "vectors": str(args.vectors),
            "base": str(args.base or getattr(engine.models["base"].config, "_name_or_path", "")),
            "machine": machine_info(),
            "command": command_line(__file__, argv),
            "wall_time_s": time.perf_counter() - t0,
        }
    )
    out = Path(args.out)
    write_json(out / "projection.json", result)
    plot_profile(result, out / "projection.png")
    for L in dict.fromkeys([args.layer, result["n_layers"] - 1]):  # the steered block and the last one
        for cond, per_name in result["conditions"].items():
            print(f"layer {L:>3} {cond:>28}: " + ", ".join(f"{n} {per_name[n][L]:+.3g}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())

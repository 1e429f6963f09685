"""Layer x alpha sweep of persona-vector steering: how far it moves the activations along the
vector, and what it costs in fluency (perplexity under the unsteered base), plus a recommendation.

    .venv/bin/python benchmarks/record/steering_sweep.py --persona creative_professional --layers 10,15,20 \
        --alphas 0,1,2,4,8 --prompts 8 --max-new-tokens 48

Writes <out>/sweep.json (records, recommendation, machine, command), <out>/heatmap.png and, when a
setting qualifies, <out>/lm_eval_steer.pt for `lm_eval --model steered`. Vectors come from --vectors
(extracted there first for the personas it lacks). Several --persona names are merged (plain average).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import (  # noqa: E402
    add_steering_args,
    command_line,
    machine_info,
    steering_inputs,
)
from mpg.eval.steering.lm_eval_export import export_lm_eval_steer  # noqa: E402
from mpg.eval.steering.sweep import recommend, sweep  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def plot_heatmap(records: list[dict], best: dict | None, path: Path, title: str) -> None:
    """Two panels over layer (rows) x alpha (columns): projection shift and perplexity ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patheffects

    layers = sorted({r["layer"] for r in records})
    alphas = sorted({r["alpha"] for r in records})
    fig, axes = plt.subplots(
        1, 2, figsize=(2 * (2.5 + 0.8 * len(alphas)), 1.8 + 0.6 * len(layers)), squeeze=False
    )
    for ax, key, label, cmap in (
        (axes[0, 0], "projection_shift", "projection shift", "viridis"),
        (axes[0, 1], "ppl_ratio", "perplexity ratio (steered / unsteered)", "magma_r"),
    ):
        grid = torch.full((len(layers), len(alphas)), float("nan"))  # [layers, alphas]
        for r in records:
            grid[layers.index(r["layer"]), alphas.index(r["alpha"])] = r[key]
        im = ax.imshow(grid.numpy(), cmap=cmap, aspect="auto")
        for i in range(len(layers)):
            for j in range(len(alphas)):
                ax.text(
                    j,
                    i,
                    f"{float(grid[i, j]):.3g}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="w",
                    path_effects=[patheffects.withStroke(linewidth=2, foreground="k")],
                )  # readable on any colour
        if best is not None:
            ax.add_patch(
                plt.Rectangle(
                    (alphas.index(best["alpha"]) - 0.5, layers.index(best["layer"]) - 0.5),
                    1,
                    1,
                    fill=False,
                    edgecolor="red",
                    linewidth=2,
                )
            )
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_yticks(range(len(layers)), [str(L) for L in layers])
        ax.set_xlabel("alpha")
        ax.set_ylabel("layer")
        ax.set_title(label, fontsize=10)
        fig.colorbar(im, ax=ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--persona",
        default="creative_professional",
        help="persona vector name(s), comma-separated (merged): creative roles or MBTI letters",
    )
    ap.add_argument("--layers", type=ints, default=[10, 15, 20])
    ap.add_argument("--alphas", type=floats, default=[0, 1, 2, 4, 8])
    ap.add_argument("--max-ppl-ratio", type=float, default=1.5)
    add_steering_args(ap, out="out/steering_sweep")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    names = [n.strip() for n in args.persona.split(",") if n.strip()]
    engine, vectors, prompts = steering_inputs(args, names)
    vector = vectors.merge(names)  # [n_layers, H]
    records = sweep(
        engine,
        vector,
        args.layers,
        args.alphas,
        prompts,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    best = recommend(records, args.max_ppl_ratio)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base_path = str(args.base or getattr(engine.models["base"].config, "_name_or_path", ""))
    steer_file = None
    if best is not None:
        steer_file = out / "lm_eval_steer.pt"
        export_lm_eval_steer(
            vectors, steer_file, names, layer=best["layer"], alpha=best["alpha"], model=engine.models["base"]
        )
    # json.dumps, not write_json: the records keep NaN (a degenerate run's), which recommend() reads back
    (out / "sweep.json").write_text(
        json.dumps(
            {
                "personas": names,
                "vectors": str(args.vectors),
                "base": base_path,
                "prompts": prompts,
                "layers": args.layers,
                "alphas": args.alphas,
                "max_new_tokens": args.max_new_tokens,
                "temperature": args.temperature,
                "seed": args.seed,
                "rule": f"largest projection shift with alpha != 0, shift > 0 and ppl_ratio <= {args.max_ppl_ratio}",
                "recommendation": best,
                "records": records,
                "lm_eval_steer": str(steer_file) if steer_file else None,
                "machine": machine_info(next(engine.models["base"].parameters()).device),
                "command": command_line(__file__, argv),
                "wall_time_s": time.perf_counter() - t0,
            },
            indent=2,
        )
    )
    plot_heatmap(records, best, out / "heatmap.png", f"steering sweep: {'+'.join(names)}")
    if best is None:
        print(
            f"no setting keeps perplexity within {args.max_ppl_ratio}x of unsteered with a positive shift; "
            f"see {out / 'sweep.json'}"
        )
    else:
        print(
            f"recommended: layer {best['layer']}, alpha {best['alpha']:g} (projection shift "
            f"{best['projection_shift']:.3g}, ppl ratio {best['ppl_ratio']:.2f}); "
            f"lm-eval: --model steered --model_args pretrained={base_path},steer_path={steer_file}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

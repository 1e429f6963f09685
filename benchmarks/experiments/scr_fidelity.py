"""How far SCR's estimated thresholds move its output from the exact chunk-level target p_k.

On the tiny enumerable model of the test suite (a mixture of two LoRA experts, far from the base
proposal), draws S responses per setting of (pilot, margin) and reports the total
variation distance to the exact p_k, the acceptance rate and the clip rate. This is how the SCR
defaults (pilot 32, margin 0, window quantile 1 = the maximum) were chosen. Writes JSON.

    .venv/bin/python benchmarks/experiments/scr_fidelity.py --samples 1000 --out out/scr_fidelity.json
    .venv/bin/python benchmarks/experiments/scr_fidelity.py --settings 32:0:1,32:0:0.9,32:0:0.75,32:0:0.5   # bound quantiles
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # benchmarks.common; the tests' tiny model and oracle

from oracle import empirical, exact_distribution, tv, tv_tolerance  # noqa: E402
from tiny import EOS, add_lora, tiny_model, tiny_tokenizer  # noqa: E402

from benchmarks.common import command_line, machine_info, write_json  # noqa: E402
from mpg.engine import Engine  # noqa: E402
from mpg.policies import Attribute, Target  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument(
        "--settings",
        default="8:0,32:0,8:1,32:1",
        help="pilot:margin[:quantile] settings (quantile of the threshold window, default 1 = its maximum)",
    )
    ap.add_argument("--out", default="out/scr_fidelity.json")
    args = ap.parse_args(argv)
    engine = Engine(add_lora(tiny_model(sharpness=1.0), ["x", "y"], alpha=8), tiny_tokenizer())
    engine.adapters["base"] |= {"x", "y"}
    target = Target(
        (Attribute.expert("x", "b a", 0.5), Attribute.expert("y", "a", 0.5)), aggregator="mixture"
    )
    n_tokens = k = 2
    p = exact_distribution(engine, target, "a b", n_tokens, k, EOS)
    rows = []
    print(
        f"sampling-noise tolerance at S={args.samples}: {tv_tolerance(p, args.samples):.3f}", file=sys.stderr
    )
    for setting in args.settings.split(","):
        pilot, margin, *rest = setting.split(":")
        quantile = float(rest[0]) if rest else 1.0
        t0 = time.perf_counter()
        out = engine.generate(
            ["a b"] * args.samples,
            target=target,
            sampler="scr",
            max_new_tokens=n_tokens,
            seed=0,
            eos_token_id=EOS,
            chunk_size=k,
            pilot=int(pilot),
            margin=float(margin),
            quantile=quantile,
        )
        st = out.stats
        row = {
            "pilot": int(pilot),
            "margin": float(margin),
            "quantile": quantile,
            "tv_to_pk": tv(empirical(out.token_ids), p),
            "acceptance_rate": sum(s.accepted_tokens for s in st) / sum(s.drafted_tokens for s in st),
            "clip_rate": sum(s.clips for s in st) / sum(s.rounds for s in st),
            "ms_per_sample": (time.perf_counter() - t0) / args.samples * 1000,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    write_json(
        args.out,
        {
            "samples": args.samples,
            "tolerance": tv_tolerance(p, args.samples),
            "results": rows,
            "machine": machine_info(),
            "command": command_line(__file__, argv),
        },
    )


if __name__ == "__main__":
    main()

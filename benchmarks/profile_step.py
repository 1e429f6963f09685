"""Where a decode step's time goes: cProfile of one sampler run against plain generate() of the base.

Runs the floor (plain `generate()` of the bare base) and the engine (default: `fused` at the default
composition, ENTJ from the shipped LoRA experts) on one prompt under cProfile, and with `--matmul`
times the decoder's projection matmuls alone at 1 row and at the target's row count, with weights
too large for the cache (as in decoding). Writes JSON (the top functions by own time, per run) and
prints the same as a table.

    .venv/bin/python benchmarks/profile_step.py --max-new-tokens 128 --matmul --out out/profile_step.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path

import torch


def profiled(fn) -> tuple[float, list[dict]]:
    """(wall seconds, functions by own time) of fn()."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, ncalls, tottime, cumtime, callers)}
    rows = [
        {"function": f"{Path(f).name}:{line}({name})", "calls": nc, "own_s": tt, "cumulative_s": ct}
        for (f, line, name), (_, nc, tt, ct, _) in stats.items()
    ]
    return wall, sorted(rows, key=lambda r: -r["own_s"])


def projection_matmuls_ms(cfg, rows: int, reps: int = 5) -> float:
    """One decode step's q, k, v, o, gate, up, down matmuls over all layers at `rows` rows (ms)."""
    H, F, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (H // cfg.num_attention_heads)
    shapes = [(H, H), (kv, H), (kv, H), (H, H), (F, H), (F, H), (H, F)]  # [out, in]
    weights = [[torch.randn(o, i) for o, i in shapes] for _ in range(L)]  # cold: far larger than L2
    x = {n: torch.randn(rows, 1, n) for n in (H, F)}  # [rows, 1, in]

    def step():
        for layer in weights:
            for w in layer:
                torch.nn.functional.linear(x[w.shape[1]], w)

    step()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t0) / reps * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sampler", default="fused")
    ap.add_argument("--persona", default="ENTJ")
    ap.add_argument("--prompt", default="How would you spend a free weekend?")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--top", type=int, default=15, help="functions listed per run")
    ap.add_argument("--matmul", action="store_true", help="also time the projection matmuls alone")
    ap.add_argument("--out", default="out/profile_step.json")
    args = ap.parse_args(argv)

    from speed import floor_run  # the speed benchmark's floor: the same context, sampling and settings
    from transformers import AutoModelForCausalLM

    from mpg import Engine
    from mpg.default_model import default_base_path
    from mpg.personas import persona

    engine = Engine.from_pretrained()
    target = persona(engine, args.persona).target()
    rows = len(target.policies())
    floor = AutoModelForCausalLM.from_pretrained(default_base_path()).eval()
    n = args.max_new_tokens

    def run_floor():
        floor_run(floor, engine.tokenizer, [args.prompt], n, seed=0)

    def run_engine():
        engine.generate(
            args.prompt, target=target, sampler=args.sampler, max_new_tokens=n, seed=0, eos_token_id=[]
        )

    engine.generate(
        args.prompt, target=target, sampler=args.sampler, max_new_tokens=2, eos_token_id=[]
    )  # warm
    run_floor()
    result = {"rows": rows, "sampler": args.sampler, "persona": args.persona, "max_new_tokens": n, "runs": {}}
    for name, fn in (("floor", run_floor), (args.sampler, run_engine)):
        wall, funcs = profiled(fn)
        result["runs"][name] = {"wall_s": wall, "tokens_per_s": n / wall, "top": funcs[: args.top]}
        print(f"\n{name}: {wall:.1f} s, {n / wall:.2f} tokens/s (under cProfile)")
        for f in funcs[: args.top]:
            print(
                f"  {f['own_s']:7.2f} s own {f['cumulative_s']:7.2f} s cum {f['calls']:7d}x  {f['function']}"
            )
    if args.matmul:
        cfg = engine.models["base"].config
        result["projection_matmuls_ms"] = {str(r): projection_matmuls_ms(cfg, r) for r in (1, rows)}
        print(f"\nprojection matmuls of one step (ms), by rows: {result['projection_matmuls_ms']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

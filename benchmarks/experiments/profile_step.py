"""Where a decode step's time goes: a profile of one sampler run against plain generate() of the base.

Runs the floor (plain `generate()` of the bare base) and the engine (default: `fused` at the default
composition, ENTJ from the shipped LoRA experts) on `--batch` prompts (the speed benchmark's), under
cProfile (Python functions by own time) or `--profiler torch` (torch ops by own CPU time, grouped by
input shape). Also times the prefill alone (each side's second 1-token run) and, with `--matmul`, the
decoder's projection matmuls alone at 1 row and at the target's row count, with weights too large for
the cache (as in decoding). Writes JSON and prints the same as tables.

    .venv/bin/python benchmarks/experiments/profile_step.py --max-new-tokens 128 --matmul --out out/profile_step.json
    .venv/bin/python benchmarks/experiments/profile_step.py --batch 8 --max-new-tokens 16 --profiler torch --out out/profile_b8.json
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import SPEED_PROMPTS, command_line, floor_run, machine_info, write_json  # noqa: E402


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


def torch_profiled(fn, top: int) -> tuple[float, list[dict]]:
    """(wall seconds, torch ops by own CPU time, grouped by input shapes) of fn()."""
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    wall = time.perf_counter() - t0
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    rows = [
        {
            "function": f"{e.key} {e.input_shapes}",
            "calls": e.count,
            "own_s": e.self_cpu_time_total / 1e6,
            "cumulative_s": e.cpu_time_total / 1e6,
        }
        for e in events[:top]
    ]
    return wall, rows


def wall_of(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def projection_matmuls_ms(cfg, rows: int, dtype=torch.float32, reps: int = 5) -> float:
    """One decode step's q, k, v, o, gate, up, down matmuls over all layers at `rows` rows (ms)."""
    H, F, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (H // cfg.num_attention_heads)
    shapes = [(H, H), (kv, H), (kv, H), (H, H), (F, H), (F, H), (H, F)]  # [out, in]
    weights = [[torch.randn(o, i, dtype=dtype) for o, i in shapes] for _ in range(L)]  # cold: >> L2
    x = {n: torch.randn(rows, 1, n, dtype=dtype) for n in (H, F)}  # [rows, 1, in]

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
    ap.add_argument("--batch", type=int, default=1, help="prompts generated together (the speed benchmark's)")
    ap.add_argument("--profiler", default="cprofile", choices=["cprofile", "torch"])
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--top", type=int, default=15, help="functions listed per run")
    ap.add_argument("--matmul", action="store_true", help="also time the projection matmuls alone")
    ap.add_argument(
        "--dtype", default=None, help="float32 or bfloat16 (engine and floor; default: the engine's default)"
    )
    ap.add_argument("--out", default="out/profile_step.json")
    args = ap.parse_args(argv)
    if args.dtype not in (None, "float32", "bfloat16"):
        ap.error(f"--dtype must be float32 or bfloat16, got {args.dtype!r}")

    from transformers import AutoModelForCausalLM

    from mpg import Engine
    from mpg.default_model import default_base_path
    from mpg.personas import persona

    if not 1 <= args.batch <= len(SPEED_PROMPTS):
        ap.error(f"--batch must be 1..{len(SPEED_PROMPTS)}")
    engine = Engine.from_pretrained(dtype=args.dtype)  # None: the engine's default
    dtype = engine.models["base"].dtype  # the floor runs in the engine's dtype
    args.dtype = str(dtype).removeprefix("torch.")
    target = persona(engine, args.persona).target()
    rows = len(target.policies())
    floor = AutoModelForCausalLM.from_pretrained(default_base_path(), dtype=dtype).eval()
    prompts = SPEED_PROMPTS[: args.batch]

    def run_floor(n=args.max_new_tokens):
        floor_run(floor, engine.tokenizer, prompts, n, seed=0)

    def run_engine(n=args.max_new_tokens):
        engine.generate(
            prompts,
            target=target,
            sampler=args.sampler,
            max_new_tokens=n,
            seed=0,
            eos_token_id=[],
            batch_size=len(prompts),
        )

    run_engine(2)  # warm: first use builds kernels, LoRA stacks, caches
    run_floor(2)
    n = args.max_new_tokens
    result = {
        "dtype": args.dtype,
        "batch": args.batch,
        "rows": rows,
        "sampler": args.sampler,
        "persona": args.persona,
        "max_new_tokens": n,
        "profiler": args.profiler,
        "prefill_s": {"floor": wall_of(lambda: run_floor(1)), args.sampler: wall_of(lambda: run_engine(1))},
        "runs": {},
    }
    print(f"prefill alone (a 1-token run), s: {result['prefill_s']}")
    for name, fn in (("floor", run_floor), (args.sampler, run_engine)):
        if args.profiler == "torch":
            wall, funcs = torch_profiled(fn, args.top)
        else:
            wall, funcs = profiled(fn)
            funcs = funcs[: args.top]
        tokens = n * len(prompts)
        result["runs"][name] = {"wall_s": wall, "tokens_per_s": tokens / wall, "top": funcs}
        print(f"\n{name}: {wall:.1f} s, {tokens / wall:.2f} tokens/s (under {args.profiler})")
        for f in funcs:
            print(
                f"  {f['own_s']:7.2f} s own {f['cumulative_s']:7.2f} s cum {f['calls']:7d}x  {f['function']}"
            )
    if args.matmul:
        cfg = engine.models["base"].config
        result["projection_matmuls_ms"] = {str(r): projection_matmuls_ms(cfg, r, dtype) for r in (1, rows)}
        print(f"\nprojection matmuls of one step (ms), by rows: {result['projection_matmuls_ms']}")
    result.update(machine=machine_info(), command=command_line(__file__, argv))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

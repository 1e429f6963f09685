"""Quick look at every sampler on the embedded default model with a prompted MBTI persona.

Not the speed benchmark of record (that is benchmarks/speed.py, issue 6): one prompt, one run per
sampler, to see acceptance, clips and tokens/s. Writes JSON.

    .venv/bin/python benchmarks/samplers_quick.py --persona ENTJ --max-new-tokens 64 --out out/samplers_quick.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from mpg import Engine
from mpg.personas import prompted_mbti


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persona", default="ENTJ")
    ap.add_argument("--prompt", default="How would you spend a free weekend?")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samplers", default="fused,speculative:4,scr:2,scr:4,scr:8")
    ap.add_argument("--out", default="out/samplers_quick.json")
    args = ap.parse_args()

    engine = Engine.from_pretrained(dtype="float32")
    attrs = prompted_mbti(args.persona)
    ids = engine.tokenizer(args.prompt).input_ids
    t0 = time.perf_counter()  # floor: plain generate() of the base model, same length, sampling
    with torch.inference_mode():
        base = engine.models["base"].generate(
            torch.tensor([ids]),
            max_new_tokens=args.max_new_tokens,
            min_new_tokens=args.max_new_tokens,
            do_sample=True,
        )
    floor = (base.shape[1] - len(ids)) / (time.perf_counter() - t0)
    rows = [{"sampler": "base generate()", "tokens_per_s": floor}]
    print(f"base generate(): {floor:.2f} tok/s", file=sys.stderr)
    for spec in args.samplers.split(","):
        name, _, k = spec.partition(":")
        out = engine.generate(
            args.prompt,
            attrs,
            sampler=name,
            chunk_size=int(k or 4),
            lam=args.lam,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            eos_token_id=[],
        )
        st = out.stats[0].as_dict()
        row = {
            "sampler": spec,
            **{
                key: st[key]
                for key in (
                    "new_tokens",
                    "tokens_per_s",
                    "acceptance_rate",
                    "clip_rate",
                    "fallbacks",
                    "model_calls",
                    "wall_time_s",
                )
            },
        }
        rows.append(row)
        print(
            f"{spec}: {row['tokens_per_s']:.2f} tok/s, acceptance {row['acceptance_rate']:.2f}, "
            f"clip rate {row['clip_rate']:.2f}, model calls {row['model_calls']}",
            file=sys.stderr,
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "persona": args.persona,
                "prompt": args.prompt,
                "lam": args.lam,
                "max_new_tokens": args.max_new_tokens,
                "machine": platform.platform(),
                "threads": torch.get_num_threads(),
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

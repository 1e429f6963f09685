"""Quick look at every sampler on the embedded default model with a prompted MBTI persona.

Not the speed benchmark of record (that is benchmarks/record/speed.py): one prompt, one run per
sampler, to see acceptance, clips and tokens/s. Writes JSON.

    .venv/bin/python benchmarks/experiments/samplers_quick.py --persona ENTJ --max-new-tokens 64 --out out/samplers_quick.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import command_line, floor_run, machine_info, write_json  # noqa: E402
from mpg import Engine  # noqa: E402
from mpg.personas import prompted_mbti  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persona", default="ENTJ")
    ap.add_argument("--prompt", default="How would you spend a free weekend?")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samplers", default="fused,speculative:4,scr:2,scr:4,scr:8")
    ap.add_argument("--out", default="out/samplers_quick.json")
    args = ap.parse_args(argv)

    engine = Engine.from_pretrained(dtype="float32")
    attrs = prompted_mbti(args.persona)
    # floor: plain generate() of the base model, same length, sampling (the speed benchmark's floor)
    floor = floor_run(engine.models["base"], engine.tokenizer, [args.prompt], args.max_new_tokens, args.seed)
    floor = floor["tokens_per_s"]
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
    write_json(
        args.out,
        {
            "persona": args.persona,
            "prompt": args.prompt,
            "lam": args.lam,
            "max_new_tokens": args.max_new_tokens,
            "machine": machine_info(),
            "command": command_line(__file__, argv),
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()

"""Does a steered proposal draft closer to the target? SCR acceptance with a plain vs a steered proposal.

The target is an MBTI persona (shipped experts when installed, else prompted attributes); the anchor
stays the plain base. The proposal is either the anchor (plain) or the base steered with the merged
persona vectors of the type's four letters at `--layer` with each `--alphas` value (alpha 0 = plain).
Same prompts, same seeds. Writes JSON + Markdown.

    .venv/bin/python benchmarks/experiments/steered_proposal.py --persona ENTJ --prompts 4 --max-new-tokens 48 \
        --vectors out/vectors/persona_vectors --layer 15 --alphas 0,1,2,4 --out out/steered_proposal
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import (  # noqa: E402
    EVAL_PROMPTS,
    add_layer_arg,
    add_model_args,
    add_vector_args,
    command_line,
    machine_info,
    steered_layer,
    vectors_from_args,
    write_results,
)
from mpg import Engine, Policy, Steer  # noqa: E402
from mpg.personas import parse_mbti, persona  # noqa: E402


def run(engine, attrs, anchor, proposal, prompts, args) -> dict:
    totals = {"drafted": 0, "accepted": 0, "new_tokens": 0, "wall_s": 0.0, "clips": 0, "rounds": 0}
    per_prompt = []
    for i, prompt in enumerate(prompts):
        out = engine.generate(
            prompt,
            attrs,
            anchor=anchor,
            proposal=proposal,
            sampler="scr",
            chunk_size=args.chunk_size,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed + i,
        )
        st = out.stats[0]
        totals["drafted"] += st.drafted_tokens
        totals["accepted"] += st.accepted_tokens
        totals["new_tokens"] += st.new_tokens
        totals["wall_s"] += st.wall_time_s
        totals["clips"] += st.clips
        totals["rounds"] += st.rounds
        per_prompt.append({"prompt": prompt, "acceptance_rate": st.acceptance_rate, "text": out.texts[0]})
    return {
        **totals,
        "acceptance_rate": totals["accepted"] / max(totals["drafted"], 1),
        "tokens_per_s": totals["new_tokens"] / max(totals["wall_s"], 1e-9),
        "per_prompt": per_prompt,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persona", default="ENTJ")
    ap.add_argument("--experts", default="auto", help="auto | shipped | prompted | folder")
    add_vector_args(ap)
    add_layer_arg(ap)
    ap.add_argument("--alphas", default="0,1,2,4")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    add_model_args(ap, device=False)
    ap.add_argument("--out", default="out/steered_proposal")
    args = ap.parse_args(argv)

    engine = Engine.from_pretrained(args.base, dtype="float32")
    letters = list(parse_mbti(args.persona))
    vectors = vectors_from_args(engine, args, letters)
    layer = steered_layer(engine, args.layer)
    engine.add_steering_vector("persona", vectors.merge(letters))
    p = persona(engine, args.persona, experts=args.experts)
    prompts = [EVAL_PROMPTS[i % len(EVAL_PROMPTS)] for i in range(args.prompts)]
    rows = []
    for alpha in [float(a) for a in args.alphas.split(",")]:
        proposal = None if alpha == 0 else Policy(steering=Steer("persona", layer, alpha))
        print(f"proposal alpha={alpha:g} ...", file=sys.stderr)
        rows.append({"alpha": alpha, **run(engine, list(p.attributes), p.anchor, proposal, prompts, args)})
    record = {
        "persona": args.persona,
        "attributes": p.describe(),
        "layer": layer,
        "chunk_size": args.chunk_size,
        "max_new_tokens": args.max_new_tokens,
        "prompts": prompts,
        "seed": args.seed,
        "results": rows,
        "command": command_line(__file__, argv),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    lines = [
        "| proposal | acceptance rate | accepted / drafted | tokens/s | clips |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        name = "plain (anchor)" if r["alpha"] == 0 else f"steered, alpha {r['alpha']:g} @ block {layer}"
        lines.append(
            f"| {name} | {r['acceptance_rate']:.3f} | {r['accepted']} / {r['drafted']} | "
            f"{r['tokens_per_s']:.2f} | {r['clips']} |"
        )
    write_results(args.out, record, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Probe: how far the composed target moves when the engine runs in bfloat16 instead of float32.

Samples responses from the float32 target (`fused`, exact), then teacher-forces each one through the
float32 and the bfloat16 engine and compares, position by position, the target's next-token law p_1
and the bare anchor's (what plain bf16 decoding of the base would change on its own): total
variation, and how often the two targets keep different token sets. Writes JSON.

    .venv/bin/python benchmarks/experiments/probes/dtype_distance.py --prompts 4 --max-new-tokens 64 \
        --out out/probe/dtype_distance.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root: benchmarks.common

from benchmarks.common import SPEED_PROMPTS, command_line, machine_info, write_json  # noqa: E402
from mpg import Engine  # noqa: E402
from mpg.personas import persona  # noqa: E402


def teacher_forced(engine: Engine, target, prompt: str, y: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(target log p_1, anchor log-probs) before each token of y and after it: [L+1, V] each, float32."""
    table = engine.policy_table(target, [prompt])
    scorer = engine.build_scorer(table)
    with torch.inference_mode():
        logits = scorer.score([[]], torch.tensor([[y]]))  # [1, P, 1, L+1, V]
    lp = torch.log_softmax(logits[0, :, 0].float(), -1)  # [P, L+1, V]
    return table.rows.token_logprobs(lp, 1.0, 1.0), lp[table.rows.anchor]


def distances(p: torch.Tensor, q: torch.Tensor) -> dict:
    """Over positions of two log-prob tensors [L, V]: mean and max total variation, and the share of
    positions whose supports differ (the plausibility cut kept other tokens; KL is infinite there)."""
    P, Q = p.exp(), q.exp()  # [L, V]
    tv = 0.5 * (P - Q).abs().sum(-1)  # [L]
    differ = (p.isfinite() != q.isfinite()).any(-1)  # [L]
    return {
        "tv_mean": float(tv.mean()),
        "tv_max": float(tv.max()),
        "support_differs": float(differ.float().mean()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persona", default="ENTJ")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default="out/probe/dtype_distance.json")
    args = ap.parse_args(argv)

    engines = {dt: Engine.from_pretrained(dtype=dt) for dt in ("float32", "bfloat16")}
    targets = {dt: persona(e, args.persona).target() for dt, e in engines.items()}
    rows = []
    for i, prompt in enumerate(SPEED_PROMPTS[: args.prompts]):
        out = engines["float32"].generate(
            prompt, target=targets["float32"], sampler="fused", max_new_tokens=args.max_new_tokens, seed=i
        )
        y = list(out.token_ids[0])
        got = {dt: teacher_forced(engines[dt], targets[dt], prompt, y) for dt in engines}
        row = {
            "prompt": prompt,
            "tokens": len(y),
            "target": distances(got["float32"][0], got["bfloat16"][0]),
            "anchor": distances(got["float32"][1], got["bfloat16"][1]),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        part: {
            k: sum(r[part][k] * r["tokens"] for r in rows) / sum(r["tokens"] for r in rows)
            for k in ("tv_mean", "support_differs")
        }
        for part in ("target", "anchor")
    }
    result = {"persona": args.persona, "composition": "default", "rows": rows, "token_weighted": summary}
    result.update(machine=machine_info(), command=command_line(__file__, argv))
    print(json.dumps(summary))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ceiling of any drafted exact sampler here: what one scoring pass over k drafted tokens costs
against `fused`'s one-token step, for the composed persona, on this machine.

`speculative` with a draft that costs nothing and is always accepted emits k + 1 tokens per pass over
k + 1 positions of every row, so its tokens/s is at most (k + 1) / t(k), against `fused`'s 1 / t(0);
at per-token acceptance a it emits (1 - a^(k+1)) / (1 - a) tokens per pass. This times t(k) (the
scorer's own pass on random drafts, the target's support kept as the samplers keep it) and the head
drafter's cost per drafted token, and writes the ceilings as JSON.

    .venv/bin/python benchmarks/experiments/verify_ceiling.py --persona ENTJ --ks 0,1,2,3,4 --repeats 20 \
        --out out/verify_ceiling.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import command_line, machine_info, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persona", default="ENTJ")
    ap.add_argument("--ks", default="0,1,2,3,4", help="draft lengths timed (0: fused's step)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--context", type=int, default=64, help="response tokens already in the cache")
    ap.add_argument("--base", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--draft-head", default=None, help="head folder (default: the shipped one)")
    ap.add_argument("--out", default="out/verify_ceiling.json")
    args = ap.parse_args(argv)

    from mpg import Engine
    from mpg.personas import persona
    from mpg.samplers import SamplerConfig, Sequence, SequenceSettings, prompt_rng

    engine = Engine.from_pretrained(args.base, dtype=args.dtype)
    head = engine.load_draft_head(args.draft_head)
    target = persona(engine, args.persona).target()
    settings = SequenceSettings("speculative", 1.0, 1.0, SamplerConfig(), frozenset())
    seq = Sequence(10_000, prompt_rng(0, 0), settings)
    gen = torch.Generator().manual_seed(0)
    V = engine.models["base"].config.vocab_size
    seq.y = torch.randint(0, V, (args.context,), generator=gen).tolist()
    pending = engine.prepare([(target, "How would you spend a free weekend?", seq, [], None)])
    batch = pending.batch
    ks = [int(k) for k in args.ks.split(",")]
    times: dict[int, list[float]] = {k: [] for k in ks}
    with torch.inference_mode():
        batch.scorer.score_rows(batch.ys)  # the response into every row's cache ...
        batch.scorer.commit([len(seq.y)])  # ... up to its last token, which each pass feeds again
        for rep in range(args.repeats + 2):  # two warm-up rounds (oneDNN builds kernels per shape)
            for k in ks:
                chunks = None if k == 0 else torch.randint(0, V, (1, 1, k), generator=gen)
                t0 = time.perf_counter()
                batch.scorer.score_rows(batch.ys, chunks, support=batch.support())
                dt = time.perf_counter() - t0
                batch.scorer.commit([len(seq.y)])  # keep nothing of the draft
                if rep >= 2:
                    times[k].append(dt)
        # the head drafter's cost per drafted token: the head over a full window, then W of its output
        W = engine.models["base"].get_output_embeddings()
        emb = engine.models["base"].get_input_embeddings()
        H, L = head.config.hidden_size, head.config.window
        f, toks = torch.randn(1, L, H), torch.randint(0, V, (1, L), generator=gen)
        draft = []
        for rep in range(args.repeats + 2):
            t0 = time.perf_counter()
            g = head(f, emb(toks).float())[:, -1]
            W(g.to(W.weight.dtype)).float().log_softmax(-1)
            if rep >= 2:
                draft.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    t_draft = statistics.median(draft)
    fused = 1 / med[0]
    ceiling = {}
    for k in ks:
        if k == 0:
            continue
        row = {"pass_ms": med[k] * 1000, "pass_over_fused_step": med[k] / med[0]}
        row["ceiling_at_full_acceptance_vs_fused"] = (k + 1) / (med[k] + k * t_draft) / fused
        for a in (0.5, 0.6, 0.7, 0.8, 0.9):
            tokens = (1 - a ** (k + 1)) / (1 - a)
            row[f"vs_fused_at_acceptance_{a}"] = tokens / (med[k] + k * t_draft) / fused
        ceiling[k] = row
    doc = {
        "command": command_line(__file__, argv),
        "machine": machine_info(),
        "dtype": str(engine.models["base"].dtype),
        "persona": args.persona,
        "rows": sum(g.rows for g in batch.scorer.groups),
        "fused_step_ms": med[0] * 1000,
        "head_draft_ms_per_token": t_draft * 1000,
        "by_k": ceiling,
    }
    write_json(args.out, doc)
    for k, row in ceiling.items():
        print(
            f"k={k}: pass {row['pass_ms']:.1f} ms = {row['pass_over_fused_step']:.2f}x fused's step; "
            f"ceiling {row['ceiling_at_full_acceptance_vs_fused']:.2f}x fused at full acceptance, "
            f"{row['vs_fused_at_acceptance_0.7']:.2f}x at 0.7"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

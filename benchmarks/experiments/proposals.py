"""Which proposal drafts closest to the composed target? anchor vs merged vs prompt (mpg.proposals).

For each strength lam, on an MBTI persona (shipped experts when installed):
- distance: responses are sampled from the target p_1 (speculative, anchor proposal: exact), then
  teacher-forced through every policy; per response token, KL(q || p_1) and TV(q, p_1) between each
  proposal's next-token distribution and the target's. 1 - TV is speculative's expected acceptance of
  one drafted token at that position.
- acceptance: `speculative` (adaptive chunk off and on) and `scr` (off, and on at the first lam, where
  the pilots the new chunk lengths cost are counted) with each proposal, same prompts and seed.
Writes results.json + table.md to --out.

    nice -n 10 .venv/bin/python benchmarks/experiments/proposals.py --prompts 2 --max-new-tokens 16 --scr-tokens 8 \
        --out out/proposals
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import (  # noqa: E402
    EVAL_PROMPTS,
    add_model_args,
    command_line,
    machine_info,
    write_results,
)
from mpg import Engine  # noqa: E402
from mpg.aggregators import token_target_logits  # noqa: E402
from mpg.likelihood import policy_logprobs  # noqa: E402
from mpg.personas import DEFAULT_COMPOSITION, persona  # noqa: E402
from mpg.policies import PROPOSALS, Target  # noqa: E402
from mpg.proposals import resolve_proposal  # noqa: E402
from mpg.samplers.drafting import proposal_logprobs  # noqa: E402


def distances(q_lp: torch.Tensor, p_lp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q_lp, p_lp: [T, V] log-probs -> per-token KL(q || p) [T] and TV(q, p) [T]."""
    q = q_lp.exp()
    # q = 0 terms are 0 (p may be 0 there too: the plausibility constraint); q > 0 = p: KL is inf
    kl = torch.where(q > 0, q * (q_lp - p_lp), 0.0).sum(-1)  # [T]
    tv = 0.5 * (q - p_lp.exp()).abs().sum(-1)  # [T]
    return kl, tv


def target_logprobs(target: Target, lp: torch.Tensor, index: dict) -> torch.Tensor:
    """lp: [P, T, V] policy log-probs (row index[policy]) -> [T, V] log p_1 (T = 1, top_p = 1)."""
    num = torch.stack([lp[index[a.num]] for a in target.attributes], -2)  # [T, n, V]
    den = torch.stack([lp[index[a.den]] for a in target.attributes], -2)  # [T, n, V]
    w = torch.tensor(target.normalised_weights(), dtype=lp.dtype)  # [n]
    logits = token_target_logits(
        lp[index[target.anchor]], num, den, w, target.aggregator, target.lam, target.plausibility
    )  # [T, V]
    return torch.log_softmax(logits, -1)  # [T, V]


def teacher_forced(engine, target: Target, proposals: dict, prompts, responses) -> dict:
    """Mean per-token KL(q || p_1) and TV(q, p_1) of each proposal (as drafts are drawn from it) along
    the given responses."""
    per = {name: {"kl": [], "tv": []} for name in proposals}
    for prompt, y in zip(prompts, responses):
        if not y:
            continue
        policies = list(dict.fromkeys([*target.policies(), *proposals.values()]))
        index = {p: i for i, p in enumerate(policies)}
        lp, _, _ = policy_logprobs(engine, policies, prompt, [list(y)])  # [P, 1, T, V]
        lp = lp[:, 0]  # [P, T, V]
        p_lp = target_logprobs(target, lp, index)  # [T, V]
        for name, q in proposals.items():
            # what drafts are drawn from: the proposal kept to its own plausible set (T = 1, top_p = 1)
            q_lp = proposal_logprobs(lp[index[q]], 1.0, 1.0, target.plausibility)  # [T, V]
            kl, tv = distances(q_lp, p_lp)
            per[name]["kl"] += kl.tolist()
            per[name]["tv"] += tv.tolist()
    return {
        name: {
            "kl": sum(d["kl"]) / len(d["kl"]),
            "tv": sum(d["tv"]) / len(d["tv"]),
            "tokens": len(d["kl"]),
        }
        for name, d in per.items()
    }


def acceptance(engine, target: Target, prompts, sampler: str, args, **knobs) -> dict:
    """One batched generate() of every prompt; totals over the prompts."""
    out = engine.generate(
        prompts,
        target=target,
        sampler=sampler,
        max_new_tokens=args.max_new_tokens if sampler == "speculative" else args.scr_tokens,
        chunk_size=args.chunk_size,
        max_chunk_size=args.max_chunk_size,
        seed=args.seed,
        batch_size=len(prompts),
        **knobs,
    )
    st = out.stats
    drafted, accepted = sum(s.drafted_tokens for s in st), sum(s.accepted_tokens for s in st)
    return {
        "sampler": sampler,
        **knobs,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / max(drafted, 1),
        "rounds": sum(s.rounds for s in st),
        "new_tokens": sum(s.new_tokens for s in st),
        "pilot_tokens": sum(s.pilot_tokens for s in st),
        "clips": sum(s.clips for s in st),
        "fallbacks": sum(s.fallbacks for s in st),
        "model_calls": out.batches[0].model_calls,
        "wall_s": out.batches[0].wall_time_s,
        "token_ids": out.token_ids,
    }


def write(args, argv, p, prompts, rows, wall_s: float) -> None:
    """results.json and table.md in args.out."""
    record = {
        "persona": args.persona,
        "attributes": p.describe(),
        "prompts": prompts,
        "plausibility": args.plausibility,
        "max_new_tokens": args.max_new_tokens,
        "scr_tokens": args.scr_tokens,
        "chunk_size": args.chunk_size,
        "max_chunk_size": args.max_chunk_size,
        "seed": args.seed,
        "results": rows,
        "command": command_line(__file__, argv),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": wall_s,
    }
    lines = [
        f"{args.persona}, product, plausibility {args.plausibility:g}, {len(prompts)} prompts, "
        f"speculative {args.max_new_tokens} / scr {args.scr_tokens} tokens each, k = {args.chunk_size} (adaptive: up to {args.max_chunk_size}), seed {args.seed}",
        "",
        "| lam | proposal | KL(q‖p1) /token | TV(q,p1) /token | 1 − TV | spec acc. | spec acc. adaptive "
        "(tokens/round) | scr acc. | scr acc. adaptive | scr pilot tokens (fixed → adaptive) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        spec, spec_a, scr = r["runs"][:3]
        scr_a = r["runs"][3] if len(r["runs"]) > 3 else None
        lines.append(
            f"| {r['lam']:g} | {r['proposal']} | {r['kl']:.3f} | {r['tv']:.3f} | {1 - r['tv']:.3f} | "
            f"{spec['acceptance_rate']:.3f} ({spec['accepted']}/{spec['drafted']}) | "
            f"{spec_a['acceptance_rate']:.3f} ({spec_a['new_tokens'] / spec_a['rounds']:.2f}) | "
            f"{scr['acceptance_rate']:.3f} ({scr['accepted']}/{scr['drafted']}) | "
            + (
                f"{scr_a['acceptance_rate']:.3f} | {scr['pilot_tokens']} → {scr_a['pilot_tokens']} |"
                if scr_a
                else "| |"
            )
        )
    lines.append(f"\nwall time {record['wall_s']:.0f} s; command: `{record['command']}`")
    write_results(args.out, record, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persona", default="ENTJ")
    ap.add_argument("--experts", default="auto", help="auto | shipped | prompted | folder")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32, help="tokens per response (speculative, KL)")
    ap.add_argument("--scr-tokens", type=int, default=None, help="tokens per scr response (default: same)")
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--max-chunk-size", type=int, default=16, help="adaptive chunk: the largest k")
    ap.add_argument("--lams", default="1,0.5")
    ap.add_argument(
        "--plausibility",
        type=float,
        default=DEFAULT_COMPOSITION.plausibility,
        help="the target's plausibility alpha (default: the default composition's)",
    )
    ap.add_argument("--proposals", default=",".join(PROPOSALS))
    ap.add_argument(
        "--scr-adaptive",
        default="all",
        help="proposals whose scr run is repeated with adaptive chunks at the first lam: all, none or a list",
    )
    ap.add_argument("--seed", type=int, default=0)
    add_model_args(ap, device=False)
    ap.add_argument("--out", default="out/proposals")
    args = ap.parse_args(argv)
    args.scr_tokens = args.scr_tokens or args.max_new_tokens
    t_start = time.perf_counter()

    engine = Engine.from_pretrained(args.base, dtype="float32")
    p = persona(engine, args.persona, experts=args.experts)
    prompts = [EVAL_PROMPTS[i % len(EVAL_PROMPTS)] for i in range(args.prompts)]
    names = args.proposals.split(",")
    scr_adaptive = names if args.scr_adaptive == "all" else args.scr_adaptive.split(",")
    rows = []
    for li, lam in enumerate(float(x) for x in args.lams.split(",")):
        target = Target(p.attributes, "product", lam, p.anchor, plausibility=args.plausibility)
        targets = {n: resolve_proposal(engine, target, n) for n in names}
        responses = None
        for n, t in targets.items():
            print(f"lam {lam:g}, proposal {n} ({time.perf_counter() - t_start:.0f} s) ...", file=sys.stderr)
            settings = [("speculative", False), ("speculative", True), ("scr", False)]
            if li == 0 and n in scr_adaptive:  # the pilots adaptive chunks cost scr, measured once
                settings.append(("scr", True))
            runs = []
            for sampler, adaptive in settings:
                runs.append(acceptance(engine, t, prompts, sampler, args, adaptive_chunk=adaptive))
                print(f"  {sampler} adaptive={adaptive}: {runs[-1]['wall_s']:.0f} s", file=sys.stderr)
            # speculative is exact: its responses are samples of p_1; every proposal is teacher-forced
            # along the first proposal's, so all see the same responses
            responses = responses or runs[0]["token_ids"]
            dist = teacher_forced(engine, target, {n: t.draft_policy}, prompts, responses)[n]
            for r in runs:
                r.pop("token_ids")
            rows.append({"lam": lam, "proposal": n, "policy": t.draft_policy.label(), **dist, "runs": runs})
            write(args, argv, p, prompts, rows, time.perf_counter() - t_start)  # a cut run keeps the rows
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

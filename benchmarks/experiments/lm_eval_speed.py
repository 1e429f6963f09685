"""Seconds per item of the lm-eval plugin on the mbti_16p task: one request at a time vs batched.

The work of

    mpg-lm-eval --model mpg --model_args persona=ENTJ,experts=shipped,method=fused_mixture \\
        --tasks mbti_16p --metadata data_path=../shared/data/mbti/questionnaire_16p.json

in process: lm-eval's own task machinery builds the task's loglikelihood requests (two per item, Agree /
Disagree, every item's context sharing one long head), and they are scored twice under the same
`MPGLM(persona=ENTJ, experts=shipped, method=fused_mixture)`:

- old: one `target_logliks` call per context (a fresh PolicyScorer each, so every policy's long context
  is forwarded again for every item), as the plugin did before;
- new: `MPGLM.loglikelihood` (one PolicyScorer for all contexts: each policy's shared head once, then
  per item only its tail and the options).

Writes `results.json` under --out: the command, the machine, seconds per item of both paths, the
speed-up and the largest |difference| of the log-likelihoods (and whether the greedy flags agree).

    .venv/bin/python benchmarks/experiments/lm_eval_speed.py --out out/lm_eval_speed
    .venv/bin/python benchmarks/experiments/lm_eval_speed.py --items 10 --out out/lm_eval_speed_10   # reduced
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import add_model_args, command_line, machine_info, write_results  # noqa: E402

CLI = (
    "mpg-lm-eval --model mpg --model_args persona={persona},experts={experts},method={method} "
    "--tasks mbti_16p --metadata data_path={data}"
)


def task_requests(data: str, persona: str, items: int | None) -> list:
    """The mbti_16p loglikelihood requests (lm-eval Instances) for the first `items` items, built by
    lm-eval's TaskManager exactly as its CLI builds them (persona reaches the task as the CLI's
    model_args do)."""
    from lm_eval.tasks import TaskManager

    from mpg.eval.lm_eval_cli import TASKS_DIR, register

    register()
    meta = {"data_path": data, "persona": persona}
    manager = TaskManager(
        include_path=str(TASKS_DIR), include_defaults=False, metadata=meta
    )  # mpg tasks only
    task = manager.load("mbti_16p")["tasks"]["mbti_16p"]
    task.build_all_requests(limit=items, rank=0, world_size=1)
    return [inst for inst in task.instances if inst.request_type == "loglikelihood"]


def old_loglikelihood(lm, requests) -> list[tuple[float, bool]]:
    """The plugin's loglikelihood before batching: one target_logliks call (a fresh PolicyScorer) per
    distinct context."""
    from mpg.likelihood import continuation_ids, target_logliks

    by_context: dict[str, list[int]] = defaultdict(list)
    for i, req in enumerate(requests):
        by_context[req.args[0]].append(i)
    out: list = [None] * len(requests)
    for context, members in by_context.items():
        options = [continuation_ids(lm.engine, requests[i].args[1]) for i in members]
        scores, greedy = target_logliks(lm.engine, lm.target, context, options, lm.mode)
        for j, i in enumerate(members):
            out[i] = (float(scores[j]), bool(greedy[j]))
    return out


def timed(fn, *args) -> tuple[list, float]:
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/mbti/questionnaire_16p.json")
    ap.add_argument("--items", type=int, default=None, help="first N items (default: all)")
    ap.add_argument("--persona", default="ENTJ")
    ap.add_argument("--experts", default="shipped")
    ap.add_argument("--method", default="fused_mixture")
    add_model_args(ap)
    ap.add_argument("--skip-old", action="store_true", help="time the batched path only")
    ap.add_argument("--out", default="out/lm_eval_speed")
    args = ap.parse_args(argv)

    from mpg.eval.lm_eval_plugin import MPGLM

    t0 = time.perf_counter()
    lm = MPGLM(
        base=args.base, persona=args.persona, experts=args.experts, method=args.method, device=args.device
    )
    load_s = time.perf_counter() - t0
    requests = task_requests(args.data, args.persona, args.items)
    n_items = len({req.args[0] for req in requests})
    print(f"{n_items} items, {len(requests)} requests, model loaded in {load_s:.1f} s", file=sys.stderr)

    old_loglikelihood(lm, requests[:2])  # warm-up (first forwards, allocator), untimed
    new, new_s = timed(lambda r: lm.loglikelihood(r, disable_tqdm=True), requests)
    print(f"new: {new_s / n_items:.3f} s/item", file=sys.stderr)
    res = {
        "command": command_line(__file__, argv),
        "work_of": CLI.format(persona=args.persona, experts=args.experts, method=args.method, data=args.data),
        "machine": machine_info(args.device),
        "model": args.base or "embedded default",
        "device": str(lm.device),
        "method": args.method,
        "mode": lm.mode,
        "items": n_items,
        "requests": len(requests),
        "load_s": round(load_s, 2),
        "new": {"wall_s": round(new_s, 3), "s_per_item": round(new_s / n_items, 4)},
    }
    if not args.skip_old:
        old, old_s = timed(old_loglikelihood, lm, requests)
        print(f"old: {old_s / n_items:.3f} s/item", file=sys.stderr)
        diff = max(abs(a[0] - b[0]) for a, b in zip(old, new, strict=True))
        res["old"] = {"wall_s": round(old_s, 3), "s_per_item": round(old_s / n_items, 4)}
        res["speedup"] = round(old_s / new_s, 2)
        res["max_abs_diff"] = diff
        res["greedy_agree"] = all(a[1] == b[1] for a, b in zip(old, new, strict=True))
        res["loglikelihoods"] = {"old": [a[0] for a in old], "new": [b[0] for b in new]}
        print(f"speed-up {res['speedup']}x, max |diff| {diff:.2e}", file=sys.stderr)
    out = write_results(args.out, res)
    print(f"wrote {out / 'results.json'}", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()

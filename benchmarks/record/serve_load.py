"""Load on `mpg serve` over 127.0.0.1: throughput and latency at concurrency 1, 4, 16, 64, a busy
machine, then a soak.

Starts the server itself (the embedded default model and the shipped experts unless told otherwise),
sends a fixed number of streamed chat requests per concurrency level through the `openai` client
(personas rotating over --personas, eight by default, so concurrency 16 mixes eight personas in one
running batch; each request its own seed), and reports per level: total completion tokens/s, time to
first token and end-to-end latency (p50, p95), errors and requests that got no answer. With
--compete-levels, those levels run again beside a competing CPU-bound process (a torch matmul loop on
one thread: another program on the machine), and their tokens/s are compared with the idle run's.
Then a soak: --soak-seconds at --soak-concurrency, the server's resident memory sampled every few
seconds while the requests run. Bounded and self-stopping: every request has max_tokens, every level a
fixed count, the soak a deadline, the competitor is killed; nothing listens beyond 127.0.0.1.

    .venv/bin/python benchmarks/record/serve_load.py --out out/serve_load            # the documented run
    .venv/bin/python benchmarks/record/serve_load.py --levels 1,4 --requests 4 --soak-seconds 0 --out /tmp/x

Writes OUT/serve_load.json, OUT/serve_load.md and OUT/serve_load.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import (  # noqa: E402
    command_line,
    machine_info,
    rss_mib,
    start_server,
    stop_server,
    write_results,
)

QUESTIONS = [
    "How would you spend a free weekend?",
    "What makes a good team leader?",
    "How do you decide what to cook tonight?",
    "What would you do with an unexpected day off?",
    "How do you prepare for an important meeting?",
    "What is the best way to learn a new skill?",
]


COMPETITOR = (
    "import torch; torch.set_num_threads(1); a = torch.randn(512, 512)\n"
    "while True:\n    a = torch.tanh(a @ a)"
)  # one core's worth of dense float work, as another process on the machine would use


def serve_options(args) -> list[str]:
    """The `mpg serve` options of this run."""
    options = ["--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue)]
    options += ["--threads", args.threads]
    options += ["--base", args.base] if args.base else []
    return options + (["--experts", args.experts] if args.experts else [])


def one_request(client, args, i: int) -> dict:
    """One streamed chat request; its timings, tokens and error (None when answered)."""
    persona = args.personas[i % len(args.personas)]
    t0 = time.perf_counter()
    first, tokens, finish = None, 0, None
    try:
        stream = client.chat.completions.create(
            model="mpg",
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            max_tokens=args.max_tokens,
            seed=i,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"persona": persona, "sampler": args.sampler, "ignore_eos": True},
        )
        for chunk in stream:
            if chunk.choices and (chunk.choices[0].delta.content or "") and first is None:
                first = time.perf_counter() - t0
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        error = None if finish else "no finish_reason"
    except Exception as e:  # noqa: BLE001 -- a benchmark counts failures, it does not stop on them
        error = f"{type(e).__name__}: {e}"[:200]
    return {"ttft_s": first, "latency_s": time.perf_counter() - t0, "tokens": tokens, "error": error}


def pct(xs: list[float], q: float) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def level(client, args, concurrency: int, n: int, offset: int) -> dict:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = list(pool.map(lambda i: one_request(client, args, offset + i), range(n)))
    wall = time.perf_counter() - t0
    ok = [r for r in rows if r["error"] is None]
    tokens = sum(r["tokens"] for r in ok)
    return {
        "concurrency": concurrency,
        "requests": n,
        "answered": len(ok),
        "errors": len(rows) - len(ok),
        "error_samples": sorted({r["error"] for r in rows if r["error"]})[:5],
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 3),
        "ttft_p50_s": pct([r["ttft_s"] for r in ok], 0.5),
        "ttft_p95_s": pct([r["ttft_s"] for r in ok], 0.95),
        "latency_p50_s": pct([r["latency_s"] for r in ok], 0.5),
        "latency_p95_s": pct([r["latency_s"] for r in ok], 0.95),
    }


def busy_levels(client, args, offset: int, idle: dict) -> list[dict]:
    """The --compete-levels again, beside a competing CPU-bound process; tokens/s against the idle run's."""
    out = []
    for c in [int(x) for x in args.compete_levels.split(",") if x]:
        proc = subprocess.Popen([sys.executable, "-c", COMPETITOR])
        try:
            time.sleep(3)  # the competitor is running, and the server's thread policy has seen it
            n = max(c, args.requests)
            print(f"concurrency {c} beside a competing process: {n} requests ...", file=sys.stderr)
            lv = level(client, args, c, n, offset)
            offset += n
        finally:
            proc.kill()
            proc.wait()
        base = idle.get(c)
        lv["idle_tokens_per_s"] = base["tokens_per_s"] if base else None
        lv["busy_over_idle"] = round(lv["tokens_per_s"] / base["tokens_per_s"], 3) if base else None
        print(json.dumps(lv), file=sys.stderr)
        out.append(lv)
    return out


def soak(client, args, pid: int) -> dict:
    """Requests at a fixed concurrency until the deadline; resident memory sampled every few seconds while
    they run (growth: the last quarter's median over the median of the first quarter after one minute)."""
    deadline, t0 = time.monotonic() + args.soak_seconds, time.monotonic()
    samples, results, lock, counter = [], [], threading.Lock(), iter(range(10**9))

    def worker():
        while time.monotonic() < deadline:
            with lock:
                i = next(counter)
            r = one_request(client, args, 10**6 + i)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.soak_concurrency)]
    for t in threads:
        t.start()
    while time.monotonic() < deadline:
        samples.append((round(time.monotonic() - t0, 1), round(rss_mib(pid), 1)))
        print(
            f"soak {samples[-1][0]:.0f}s: {len(results)} requests, RSS {samples[-1][1]:.0f} MiB",
            file=sys.stderr,
        )
        time.sleep(min(5, max(0.1, deadline - time.monotonic())))
    for t in threads:
        t.join(timeout=args.max_tokens * 10 + 120)
    idle = round(rss_mib(pid), 1)
    during = [m for s, m in samples if s >= min(60, args.soak_seconds / 4)] or [m for _, m in samples]
    q = max(1, len(during) // 4)
    first, last = sorted(during[:q])[q // 2], sorted(during[-q:])[q // 2]
    return {
        "seconds": args.soak_seconds,
        "concurrency": args.soak_concurrency,
        "requests": len(results),
        "errors": sum(r["error"] is not None for r in results),
        "rss_first_quarter_mib": first,
        "rss_last_quarter_mib": last,
        "rss_growth_during_load": round(last / first - 1, 4),
        "rss_max_mib": max(m for _, m in samples),
        "rss_idle_after_mib": idle,
        "rss_samples": samples,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=16, help="requests per level (at least the concurrency)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument(
        "--personas", default="ENTJ,INFP,ESTJ,ISFP,INTJ,ENFP,ISTP,ESFJ", help="rotated over the requests"
    )
    ap.add_argument("--sampler", default="fused", choices=["fused", "speculative", "scr"])
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--soak-seconds", type=float, default=600)
    ap.add_argument("--soak-concurrency", type=int, default=16)
    ap.add_argument("--threads", default="auto", help="the server's --threads")
    ap.add_argument(
        "--compete-levels", default="4", help="levels run again beside a competing process ('' for none)"
    )
    ap.add_argument("--base", default=None)
    ap.add_argument("--experts", default=None)
    ap.add_argument("--out", default="out/serve_load")
    args = ap.parse_args(argv)
    args.personas = args.personas.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import openai

    proc, url = start_server(serve_options(args), out / "server.log")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
        one_request(client, args, 0)  # warm-up: first-call costs are not load
        levels, offset = [], 1
        for c in [int(x) for x in args.levels.split(",")]:
            n = max(c, args.requests)
            print(f"concurrency {c}: {n} requests ...", file=sys.stderr)
            levels.append(level(client, args, c, n, offset))
            offset += n
            print(json.dumps(levels[-1]), file=sys.stderr)
        busy = busy_levels(client, args, offset, {lv["concurrency"]: lv for lv in levels})
        soaked = soak(client, args, proc.pid) if args.soak_seconds > 0 else None
    finally:
        exit_code = stop_server(proc)
    by_c = {lv["concurrency"]: lv for lv in levels}
    result = {
        "command": command_line(__file__, argv),
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "levels": levels,
        "speedup_16_vs_1": round(by_c[16]["tokens_per_s"] / by_c[1]["tokens_per_s"], 2)
        if 1 in by_c and 16 in by_c
        else None,
        "burst_64_lost_or_failed": by_c[64]["errors"] if 64 in by_c else None,
        "busy": busy,
        "soak": soaked,
        "server_exit_code": exit_code,
    }
    m = result["machine"]
    lines = [
        f"`{result['command']}` ({m['cpu']}, {m['cpu_count']} cores, sampler {args.sampler}, "
        f"{args.max_tokens} tokens per request)",
        "",
        "| concurrency | requests | errors | tokens/s | TTFT p50 / p95 (s) | latency p50 / p95 (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    f = lambda x: "-" if x is None else f"{x:.2f}"
    for lv in levels:
        lines.append(
            f"| {lv['concurrency']} | {lv['requests']} | {lv['errors']} | {lv['tokens_per_s']:.2f} | "
            f"{f(lv['ttft_p50_s'])} / {f(lv['ttft_p95_s'])} | {f(lv['latency_p50_s'])} / {f(lv['latency_p95_s'])} |"
        )
    for lv in busy:
        lines.append(
            f"\nBeside a competing process, concurrency {lv['concurrency']}: {lv['tokens_per_s']:.2f} tokens/s "
            f"({lv['busy_over_idle']}x the idle run's), {lv['errors']} errors."
        )
    if soaked:
        lines.append(
            f"\nSoak: {soaked['seconds']:.0f} s at concurrency {soaked['concurrency']}, {soaked['requests']} requests, "
            f"{soaked['errors']} errors; RSS during the load {soaked['rss_first_quarter_mib']:.0f} MiB (first "
            f"quarter) -> {soaked['rss_last_quarter_mib']:.0f} MiB (last quarter), "
            f"{100 * soaked['rss_growth_during_load']:+.1f}%; max {soaked['rss_max_mib']:.0f} MiB."
        )
    write_results(out, result, "\n".join(lines) + "\n", name="serve_load.json", table_name="serve_load.md")
    plot(result, out / "serve_load.png")


def plot(result: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    lv = result["levels"]
    fig, axes = plt.subplots(1, 3 if result["soak"] else 2, figsize=(13, 3.8))
    c = [x["concurrency"] for x in lv]
    axes[0].plot(c, [x["tokens_per_s"] for x in lv], "o-")
    axes[0].set(xscale="log", xlabel="concurrency", ylabel="total tokens/s", title="throughput")
    for key, style in (("latency", "o-"), ("ttft", "s--")):
        for q in ("p50", "p95"):
            axes[1].plot(c, [x[f"{key}_{q}_s"] or float("nan") for x in lv], style, label=f"{key} {q}")
    axes[1].set(xscale="log", yscale="log", xlabel="concurrency", ylabel="seconds", title="latency")
    axes[1].legend(fontsize=7)
    if result["soak"]:
        s = result["soak"]["rss_samples"]
        axes[2].plot([t for t, _ in s], [m for _, m in s])
        axes[2].set(xlabel="soak seconds", ylabel="server RSS (MiB)", title="memory during the soak")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

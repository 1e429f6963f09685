"""Command-line glue the steering benchmark scripts (`benchmarks/steering_sweep.py`, `projection.py`,
`steered_proposal.py`) share: their common options, the evaluation prompts, and what the options load.

Why in the package and not in benchmarks/: the scripts run as `python benchmarks/x.py` and the tests load
them by file path (importlib), so neither puts benchmarks/ on sys.path for a sibling import; `mpg` is
importable in both.
"""

from __future__ import annotations

import json
from itertools import zip_longest
from pathlib import Path

__all__ = ["EVAL_PROMPTS", "add_benchmark_args", "benchmark_inputs", "load_prompts"]

EVAL_PROMPTS = [  # held out from extract.DEFAULT_QUESTIONS; used when no prompt file is given
    "What are some creative uses for a brick?",
    "Name all the round things you can think of.",
    "How are a river and a road alike?",
    "Suggest new ways to make public transport more fun.",
    "What would happen if people no longer needed to sleep?",
    "Invent a new holiday and say how people celebrate it.",
    "What could a town do with an empty parking lot?",
    "Describe a tool that does not exist yet.",
]


def load_prompts(path: str | Path | None, n: int) -> list[str]:
    """The first n prompts of a .jsonl file (field "prompt", taken round-robin over its "task"s) or a
    text file (one per line); the built-in EVAL_PROMPTS when path is None or missing."""
    if path is None or not Path(path).is_file():
        pool = EVAL_PROMPTS
    elif Path(path).suffix == ".jsonl":
        by_task: dict[str, list[str]] = {}
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                by_task.setdefault(row.get("task", ""), []).append(row["prompt"])
        pool = [p for group in zip_longest(*by_task.values()) for p in group if p is not None]
    else:
        pool = [s.strip() for s in Path(path).read_text(encoding="utf-8").splitlines() if s.strip()]
    if n < 1 or not pool:
        raise ValueError(
            f"need at least one prompt (asked for {n}, {path or 'built-in list'} has {len(pool)})"
        )
    return [pool[i % len(pool)] for i in range(n)]


def add_benchmark_args(ap, out: str) -> None:
    """Add to argparse parser `ap` the options the steering benchmark scripts share: vectors file, prompts,
    sampling, extraction, base; `out` is the default output folder."""
    ap.add_argument(
        "--vectors",
        default="out/vectors/persona_vectors",
        help="PersonaVectors file (path without suffix); missing personas are extracted into it",
    )
    ap.add_argument("--prompts", type=int, default=8, help="number of evaluation prompts")
    ap.add_argument(
        "--prompt-file",
        default="../shared/data/creativity/tasks.jsonl",
        help=".jsonl with 'prompt' fields or a text file; built-in prompts if missing",
    )
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extract-samples", type=int, default=2)
    ap.add_argument("--extract-max-new-tokens", type=int, default=48)
    ap.add_argument(
        "--base", default=None, help="local Hugging Face model folder (default: the embedded model)"
    )
    ap.add_argument("--out", default=out)


def benchmark_inputs(args, names: list[str]):
    """(engine, persona vectors holding `names`, evaluation prompts) from `add_benchmark_args` options."""
    from .engine import Engine  # not at import: parsing the options needs no model code
    from .steering_analysis import load_or_extract

    engine = Engine.from_pretrained(args.base, dtype="float32")  # as every figure was measured
    vectors = load_or_extract(
        engine,
        args.vectors,
        names,
        samples=args.extract_samples,
        max_new_tokens=args.extract_max_new_tokens,
        seed=args.seed,
    )
    return engine, vectors, load_prompts(args.prompt_file, args.prompts)

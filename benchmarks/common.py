"""What several benchmark scripts share: option blocks, what a result records (machine, command), the
result writer, answers sampled on one machine and scored on another, the persona-vector cache, the speed
benchmark's prompts, floor and memory meter, and the server launcher of the load benchmark.

Benchmark glue, not library: nothing under `mpg/` imports it. The scripts put the repository root on
`sys.path` before importing it (they run as `python benchmarks/record/x.py`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from itertools import zip_longest
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent  # the repository root

# ---- options ----------------------------------------------------------------------------------------
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


def add_model_args(ap, device: bool = True) -> None:
    """--base (and --device): which model, where."""
    ap.add_argument(
        "--base", default=None, help="local Hugging Face model folder (default: the embedded model)"
    )
    if device:
        ap.add_argument("--device", default="cpu")


def add_sampling_args(ap, max_new_tokens: int, top_p: float | None = 0.9) -> None:
    """--max-new-tokens, --temperature, --top-p (not when `top_p` is None) and --seed."""
    ap.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    ap.add_argument("--temperature", type=float, default=1.0)
    if top_p is not None:
        ap.add_argument("--top-p", type=float, default=top_p)
    ap.add_argument("--seed", type=int, default=0)


def add_vector_args(ap) -> None:
    """--vectors and the extraction settings used for the personas that file lacks (`vectors_from_args`)."""
    ap.add_argument(
        "--vectors",
        default="out/vectors/persona_vectors",
        help="persona vectors (PersonaVectors path without suffix); the personas it lacks are extracted "
        "and saved there",
    )
    ap.add_argument(
        "--extract-samples",
        type=int,
        default=2,
        help="answers per (persona prompt, question) when extracting",
    )
    ap.add_argument("--extract-max-new-tokens", type=int, default=48)


def add_layer_arg(ap) -> None:
    """--layer: the steered decoder block (`steered_layer` resolves the default)."""
    ap.add_argument(
        "--layer", type=int, default=None, help="steered decoder block, 0-based (default: 2/3 of the depth)"
    )


def steered_layer(engine, layer: int | None) -> int:
    """`layer`, or 2/3 of the base model's depth when None."""
    return layer if layer is not None else 2 * engine.models["base"].config.num_hidden_layers // 3


def add_steering_args(ap, out: str) -> None:
    """The options the steering scripts (steering sweep, projection) share: vectors, prompts, sampling,
    base; `out` is the default output folder."""
    add_vector_args(ap)
    ap.add_argument("--prompts", type=int, default=8, help="number of evaluation prompts")
    ap.add_argument(
        "--prompt-file",
        default="../shared/data/creativity/tasks.jsonl",
        help=".jsonl with 'prompt' fields or a text file; built-in prompts if missing",
    )
    add_sampling_args(ap, max_new_tokens=48, top_p=None)
    add_model_args(ap, device=False)
    ap.add_argument("--out", default=out)


def steering_inputs(args, names: list[str]):
    """(engine, persona vectors holding `names`, evaluation prompts) from `add_steering_args` options."""
    from mpg.engine import Engine  # not at import: parsing the options needs no model code

    engine = Engine.from_pretrained(args.base, dtype="float32")  # the dtype of the recorded runs
    return engine, vectors_from_args(engine, args, names), load_prompts(args.prompt_file, args.prompts)


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


# ---- what a result records, and writing it ----------------------------------------------------------
def machine_info(device: str = "cpu") -> dict:
    """Where something ran: platform, CPU, torch, and the accelerator's name when `device` is one."""
    from mpg.hardware import cpu_name

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["accelerator"] = torch.cuda.get_device_name(torch.device(device))
    return info


def command_line(script: str | Path, argv: list[str] | None) -> str:
    """How to run it again: the script's path from the repository root and its arguments (`argv`, or
    this process's when None)."""
    path = Path(script).resolve()
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return shlex.join([str(rel), *(sys.argv[1:] if argv is None else argv)])


def finite(x):
    """JSON-safe: nan/inf -> None, recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, torch.Tensor):
        return finite(x.tolist())
    return x


def write_json(path: str | Path, doc) -> Path:
    """`doc` as JSON at `path` (nan/inf as null), its folder made if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(doc), indent=1))
    return path


def write_results(
    out: str | Path, doc: dict, table: str | None = None, *, name: str = "results.json", table_name="table.md"
) -> Path:
    """A benchmark's results under `out`: `doc` as JSON and, when given, the Markdown `table` beside it
    (also printed). Returns the folder."""
    out = Path(out)
    write_json(out / name, doc)
    if table is not None:
        (out / table_name).write_text(table)
        print(table)
    return out


# ---- answers sampled on one machine, scored on another (fidelity, frontier) -------------------------
# what an answer depends on besides its method and item; a plain "billy" answer also on the caller's alpha
SAMPLING_SETTINGS = ("experts", "seed", "temperature", "top_p", "max_new_tokens", "layer", "vectors")


def add_answers_args(ap) -> None:
    """The --generate-only / --answers pair (one or the other): sample on one machine, score on another
    (`save_answers`, `load_answers`)."""
    g = ap.add_mutually_exclusive_group()
    g.add_argument(
        "--generate-only",
        action="store_true",
        help="sample the free-form answers into OUT/answers.json and stop: no judges, no scoring "
        "(sample on an accelerator machine, score elsewhere)",
    )
    g.add_argument(
        "--answers",
        default=None,
        help="score the answers of --generate-only runs (comma list of their answers.json, from "
        "benchmarks/record/fidelity.py or frontier.py; same items and sampling settings) instead of sampling",
    )


def sampling_settings(args, alpha: bool = False) -> dict:
    """What a saved answer depends on besides its method and item, from a benchmark's parsed options
    (alpha too where a plain "billy" method takes the caller's steering strength)."""
    return {k: getattr(args, k) for k in SAMPLING_SETTINGS + (("alpha",) if alpha else ())}


def save_answers(
    path: str | Path, parts: dict[str, list[dict]], settings: dict, device: str = "cpu", **meta
) -> None:
    """Write sampled rows ({part: rows}) with the settings and machine they were sampled under."""
    doc = {**meta, "device": device, "machine": machine_info(device), "settings": settings}
    doc["parts"] = {k: {"answers": v} for k, v in parts.items()}
    write_json(path, doc)


def load_answers(
    paths: str | Path | list, part: str, methods: list[str], items: list, settings: dict
) -> list[dict]:
    """The saved rows of `part` (from one answers file or several), one per (method, item) in that
    order. Raises ValueError, naming the difference, when a file was sampled under other settings or
    none holds one of them."""
    by_key = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        try:
            saved = json.loads(Path(path).read_text())
            have = saved["settings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path} is not a readable answers file (a --generate-only run's): {e}"
            ) from None
        differ = {k: (have.get(k), v) for k, v in settings.items() if have.get(k) != v}
        if differ:
            raise ValueError(
                f"{path} was sampled with other settings (saved, asked): "
                + ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in differ.items())
            )
        by_key |= {(r["method"], r["id"]): r for r in saved["parts"].get(part, {}).get("answers", [])}
    wanted = [(m, it.id) for m in methods for it in items]
    missing = [w for w in wanted if w not in by_key]
    if missing:
        raise ValueError(
            f"{paths} lacks {len(missing)} of the {len(wanted)} {part} answers asked (first: method "
            f"{missing[0][0]!r}, item {missing[0][1]!r}); sample them with the same methods and items"
        )
    return [by_key[w] for w in wanted]


# ---- persona vectors by name, cached in a file ------------------------------------------------------
def persona_prompts(names: list[str]) -> dict[str, list[str]]:
    """Persona name -> system prompts: BILLY's creative roles (extract.CREATIVE_ROLES) or MBTI letters."""
    from mpg.extract import CREATIVE_ROLES
    from mpg.personas import TRAITS

    out = {}
    for n in names:
        if n in CREATIVE_ROLES:
            out[n] = CREATIVE_ROLES[n]
        elif n.upper() in TRAITS:
            out[n] = [TRAITS[n.upper()]]
        else:
            raise ValueError(
                f"unknown persona {n!r}: use one of {', '.join(CREATIVE_ROLES)} or an MBTI letter "
                f"({''.join(TRAITS)})"
            )
    return out


def load_or_extract(
    engine,
    path: str | Path,
    names: list[str],
    *,
    samples: int = 2,
    max_new_tokens: int = 48,
    seed: int = 0,
    progress: bool = True,
):
    """PersonaVectors from `path` (.safetensors + .json); personas it lacks are extracted (built-in
    neutral prompts and questions) and the file is rewritten with them added."""
    from mpg.extract import DEFAULT_QUESTIONS, NEUTRAL_PROMPTS, PersonaVectors, extract_persona_vectors
    from mpg.steering import decoder_layers

    path = Path(path)
    vectors = (
        PersonaVectors.load(path) if path.with_suffix(".safetensors").exists() else PersonaVectors({}, {})
    )
    missing = [n for n in names if n not in vectors.vectors]
    if missing:
        new = extract_persona_vectors(
            engine,
            persona_prompts(missing),
            NEUTRAL_PROMPTS,
            DEFAULT_QUESTIONS,
            samples=samples,
            max_new_tokens=max_new_tokens,
            seed=seed,
            progress=progress,
        )
        vectors = PersonaVectors(
            {**vectors.vectors, **new.vectors},
            {**new.meta, "personas": {**vectors.meta.get("personas", {}), **new.meta["personas"]}},
        )
        vectors.save(path)
    model = engine.models["base"]
    want = (len(decoder_layers(model)), model.config.hidden_size)
    for n in names:
        if tuple(vectors.vectors[n].shape) != want:
            raise ValueError(
                f"persona vector {n!r} in {path} has shape {tuple(vectors.vectors[n].shape)}, but the "
                f"model needs {list(want)} (extracted from another model?)"
            )
    return vectors


def vectors_from_args(engine, args, names: list[str], progress: bool = True):
    """`load_or_extract` with the `add_vector_args` options (and --seed)."""
    return load_or_extract(
        engine,
        args.vectors,
        names,
        samples=args.extract_samples,
        max_new_tokens=args.extract_max_new_tokens,
        seed=args.seed,
        progress=progress,
    )


# ---- the speed benchmark's prompts, floor and memory meter (speed, profile_step, probes) ------------
SPEED_PROMPTS = [
    "How would you spend a free weekend?",
    "Describe your ideal job.",
    "How do you make important decisions?",
    "What do you do when plans change at the last minute?",
    "Tell me about a time you worked in a team.",
    "How do you prepare for a trip?",
    "What makes a good friend?",
    "How do you handle criticism?",
]


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory (MiB) of a process (this one by default)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        if pid != "self":
            return float("nan")
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRSS:
    """Peak resident memory (MiB) of this process while the block runs, sampled every 5 ms."""

    def __enter__(self):
        self.peak, self._stop = rss_mib(), threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mib())


def floor_run(model, tok, prompts, max_new_tokens, seed) -> dict:
    """Plain sampling with transformers generate() of the bare base model (left-padded batch)."""
    from mpg.tokens import pad_token_id

    tok.padding_side = "left"
    if getattr(tok, "chat_template", None):  # the same context the engine gives the anchor
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in prompts
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    else:
        enc = tok(prompts, return_tensors="pt", padding=True)
    enc = enc.to(model.device)
    torch.manual_seed(seed)
    with PeakRSS() as mem, torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=True,
            pad_token_id=pad_token_id(tok),
        )
        wall = time.perf_counter() - t0
    new = (out.shape[1] - enc.input_ids.shape[1]) * len(prompts)
    return {
        "tokens": new,
        "wall_s": wall,
        "tokens_per_s": new / wall,
        "calls_per_token": (max_new_tokens + 1) / max_new_tokens,
        "acceptance_rate": None,
        "peak_rss_mib": mem.peak,
    }


# ---- `mpg serve` on 127.0.0.1 (serve_load) -----------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(options: list[str], log: Path, timeout: float = 600) -> tuple[subprocess.Popen, str]:
    """`python -m mpg serve OPTIONS` on a free port of 127.0.0.1, its output in `log`; (process, base URL)
    once /health answers. Exits with a message when the server stops or does not answer in time."""
    import httpx2

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpg", "serve", "--port", str(port), *options],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited; see {log}")
        try:
            if httpx2.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx2.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not start within {timeout:g} s")


def stop_server(proc: subprocess.Popen, timeout: float = 120) -> int:
    """SIGTERM (the server drains and exits), killed after `timeout` s; its exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode

"""Speed of every sampler against the floor (plain generate() of the base) and the MOD-style reference.

For n attributes (LoRA experts on one base, or prompted attributes) and batch sizes: tokens/s, model
forward invocations per emitted token, acceptance rate and peak resident memory, for plain
`generate()` of the base (the floor), the MOD-style reference (each policy in its own sequential
forward, no batching: run at batch 1 only), `fused`, `speculative`, `scr` at several chunk sizes and
BILLY steering (the base steered by a merged persona vector, one row). Every configuration runs
`--repeats` times; the median and min-max are reported, and every ratio (to the floor, to MOD-style) is
taken within one repeat. Also: the multi-LoRA kernels (PEFT's masked loop vs stacked vs gathered) on
`fused`, the validation kernel (reference vs fused) on random logits, and resident memory of the
base alone vs the base with 4 LoRA adapters (fresh processes). Writes JSON, Markdown and a PNG.

    .venv/bin/python benchmarks/record/speed.py --max-new-tokens 128 --repeats 3 --out out/speed
    .venv/bin/python benchmarks/record/speed.py --n 4 --kinds lora --batch 1 --samplers fused,scr:4 --repeats 1   # quick
    .venv/bin/python benchmarks/record/speed.py --n 4 --kinds lora --batch 1 \
        --samplers fused,speculative:4,speculative:4@head,scr:4@head --repeats 3 --no-memory --out out/speed_head

The composed target is the composition persona(), the CLI and the main job use
(mpg.personas.DEFAULT_COMPOSITION) unless `--compositions 'A;B'` names others; the goals read the first.
Attribute kinds: `lora` (the shipped experts as LoRA adapters on one base), `prompted` (trait
prompts, no adapters) and `full` (the paper's setting: each expert merged into its own copy of the
base, so MOD-style decoding reads n + 1 sets of weights per token). `--device cuda --dtype bfloat16`
runs engine and floor on a GPU in bf16 (the floor always runs in the engine's dtype).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import (  # noqa: E402
    ROOT,
    SPEED_PROMPTS,
    PeakRSS,
    command_line,
    floor_run,
    machine_info,
    write_json,
    write_results,
)

LETTERS = "ENTJ"


def engine_run(
    engine, prompts, target, sampler, chunk_size, max_new_tokens, seed, candidates: int = 1, proposal=None
) -> dict:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = engine.generate(
            prompts,
            target=target,
            proposal=proposal,
            sampler=sampler,
            chunk_size=chunk_size,
            candidates=candidates,
            max_new_tokens=max_new_tokens,
            seed=seed,
            eos_token_id=[],
            batch_size=len(prompts),
        )
        wall = time.perf_counter() - t0
    new = sum(s.new_tokens for s in out.stats)
    drafted = sum(s.drafted_tokens for s in out.stats)
    calls = out.stats[0].model_calls  # shared by the batch
    return {
        "tokens": new,
        "wall_s": wall,
        "tokens_per_s": new / wall,
        "calls_per_token": calls * len(prompts) / new,
        "acceptance_rate": (sum(s.accepted_tokens for s in out.stats) / drafted) if drafted else None,
        "peak_rss_mib": mem.peak,
    }


def mod_run(engine, prompts, target, max_new_tokens, seed) -> dict:
    from benchmarks.mod_style import mod_style_generate

    new = calls = 0
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        for i, p in enumerate(prompts):  # no batching: one prompt after another
            y, st = mod_style_generate(
                engine, p, target, max_new_tokens=max_new_tokens, seed=seed + i, eos_token_id=[]
            )
            new, calls = new + len(y), calls + st.model_calls
        wall = time.perf_counter() - t0
    return {
        "tokens": new,
        "wall_s": wall,
        "tokens_per_s": new / wall,
        "calls_per_token": calls / new,
        "acceptance_rate": None,
        "peak_rss_mib": mem.peak,
    }


def separate_full_models(engine, attributes: list) -> list:
    """Each LoRA policy of the attributes moved to a separate full model: its adapter merged into its
    own copy of the base, registered as model "full_<adapter>" (once). Denominators on the base stay
    there; one on an adapter (ratio=opposite: the other side's expert) moves as its numerator does."""
    import copy
    from dataclasses import replace

    def full(policy):
        if policy.adapter is None:
            return policy
        name = f"full_{policy.adapter}"
        if name not in engine.models:
            copy_of_base = copy.deepcopy(engine.models["base"])  # a PeftModel holding every adapter
            engine.add_model(name, copy_of_base.merge_and_unload(adapter_names=[policy.adapter]))
        return replace(policy, model=name, adapter=None)

    out = []
    for a in attributes:
        if a.num.adapter is None:
            raise ValueError(f"attribute {a.name!r} has no adapter to merge into a full model")
        out.append(replace(a, num=full(a.num), den=full(a.den)))
    return out


def targets(engine, kind: str, n: int, vectors, composition: str):
    """(target, billy target) for n attributes of `kind`, the first n letters of ENTJ, composed by
    `composition` (a mpg.composition spec)."""
    from mpg import Attribute, Policy, Steer, Target
    from mpg.personas import persona

    spec = LETTERS[:n]
    p = persona(
        engine, spec, experts="prompted" if kind == "prompted" else "shipped", composition=composition
    )
    attrs = separate_full_models(engine, p.attributes) if kind == "full" else p.attributes
    # the persona's own target (every composition option, plausibility included), on `attrs`
    target = dataclasses.replace(p.target(), attributes=tuple(attrs))
    name = f"merged_{spec}"
    if name not in engine.vectors:
        engine.add_steering_vector(name, vectors(spec))
    steered = Policy(
        steering=Steer(name, 20 if engine.models["base"].config.num_hidden_layers > 20 else 0, 2.0)
    )
    return target, Target((Attribute(steered, steered, 1.0, name="billy"),), anchor=steered)


def vector_source(engine, path: str):
    """Merged persona vectors of the given letters from `path` if it exists, else random vectors of the
    same size (speed does not depend on the vector's direction; the JSON says which was used)."""
    from mpg.extract import PersonaVectors

    p = Path(path)
    pv = PersonaVectors.load(p) if p.with_suffix(".safetensors").exists() else None
    cfg = engine.models["base"].config

    def get(spec):
        if pv is not None and all(c in pv.vectors for c in spec):
            v = pv.merge(list(spec))
            if tuple(v.shape) == (cfg.num_hidden_layers, cfg.hidden_size):  # extracted from this model
                return v
        g = torch.Generator().manual_seed(0)
        return torch.randn(cfg.num_hidden_layers, cfg.hidden_size, generator=g)

    return get, (
        f"persona vectors {path} (random ones where they do not fit this model)"
        if pv is not None
        else "random vectors"
    )


def summarise(runs: list[dict], key: str) -> dict:
    vals = [r[key] for r in runs if r.get(key) is not None]
    if not vals:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def memory_probe(
    base: str | None, adapters: int, lora_kernel: str = "stacked", dtype: str = "float32"
) -> dict:
    """RSS of a fresh process: before any model, peak while generating 16 tokens with fused (the
    weights are memory-mapped, so they become resident while the first forward touches them), and
    after generating once freed heap is returned to the system (malloc_trim): the steady state."""
    code = f"""
import ctypes, json, torch, transformers, peft
from benchmarks.common import PeakRSS, rss_mib
from mpg import Engine
from mpg.personas import expert_mbti, prompted_mbti
before = rss_mib()
e = Engine.from_pretrained({base!r}, lora_kernel={lora_kernel!r}, dtype={dtype!r})
attrs = expert_mbti(e, "ENTJ"[:{adapters}]) if {adapters} else prompted_mbti("E")
with PeakRSS() as m:
    e.generate("How would you spend a free weekend?", attrs, sampler="fused", max_new_tokens=16, eos_token_id=[])
try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
except OSError:
    pass
print(json.dumps({{"rss_before_model_mib": before, "steady_rss_mib": rss_mib(), "peak_rss_mib": m.peak,
                  "param_mib": sum(p.numel() * p.element_size() for p in e.models["base"].parameters()) / 2**20}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"memory probe failed: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def validation_kernel_timing(reps: int = 20) -> dict:
    """Reference (full log-softmax + gather) vs fused (gather - logsumexp) on SCR-sized logits."""
    from mpg.kernels.validation import token_logprobs_fused, token_logprobs_reference

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 1, 4, 4, 49152, generator=g)  # [P, B, n, K, V]: 9 policies, 4 candidates, chunk 4
    toks = torch.randint(0, 49152, (9, 1, 4, 4), generator=g)
    out = {}
    for name, fn in (("reference", token_logprobs_reference), ("fused", token_logprobs_fused)):
        fn(logits, toks)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(logits, toks)
        out[name + "_ms"] = (time.perf_counter() - t0) / reps * 1000
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="1,2,4", help="attribute counts")
    ap.add_argument("--kinds", default="lora,prompted", help="lora, prompted, full (separate full models)")
    ap.add_argument(
        "--compositions",
        default=None,
        help="';'-separated compositions, e.g. 'mixture,lam=0.5;product,lam=1' (default: the default composition)",
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ... (engine and floor)")
    ap.add_argument(
        "--dtype", default=None, help="float32 or bfloat16 (engine and floor; default: the engine's default)"
    )
    ap.add_argument("--batch", default="1,8")
    ap.add_argument(
        "--samplers",
        default="mod,fused,speculative:4,scr:1,scr:2,scr:4,scr:8,scr:16,scr:2x8,billy",
        help="mod, fused, speculative:K, scr:K or scr:KxC (C candidates per round), billy; a drafting "
        "sampler may name its proposal after '@' (speculative:4@head: the draft head)",
    )
    ap.add_argument(
        "--draft-head", default=None, help="draft head folder for @head (default: the shipped one)"
    )
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--lora-kernels", default="peft,stacked,gathered", help="compared on fused, n=max, batch 1"
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory probes")
    ap.add_argument("--memory-only", action="store_true", help="only the memory probes (and kernel timings)")
    ap.add_argument("--vectors", default="out/vectors/persona_vectors")
    ap.add_argument("--base", default=None)
    ap.add_argument("--out", default="out/speed")
    args = ap.parse_args(argv)

    from transformers import AutoModelForCausalLM

    from mpg import Engine
    from mpg.default_model import default_base_path

    try:
        from tqdm import tqdm
    except ImportError:  # progress is a nicety

        def tqdm(x, **_):
            return x

    from mpg.composition import Composition
    from mpg.personas import DEFAULT_COMPOSITION

    try:
        comps = [
            Composition.parse(c).name
            for c in (args.compositions or DEFAULT_COMPOSITION.name).split(";")
            if c.strip()
        ]
    except ValueError as e:
        ap.error(f"--compositions: {e}")
    if args.dtype not in (None, "float32", "bfloat16"):
        ap.error(f"--dtype must be float32 or bfloat16, got {args.dtype!r}")
    engine = Engine.from_pretrained(args.base, device=args.device, dtype=args.dtype)  # None: its default
    dtype = engine.models["base"].dtype  # the floor runs in the engine's dtype
    args.dtype = str(dtype).removeprefix("torch.")  # as resolved, for the memory probes and the JSON
    base_path = args.base or default_base_path()
    floor_model = (
        AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype).to(args.device).eval()
    )  # bare, no PEFT wrapper
    if args.draft_head:
        engine.load_draft_head(args.draft_head)
    vectors, vector_note = vector_source(engine, args.vectors)
    ns = [int(x) for x in args.n.split(",")]
    kinds = args.kinds.split(",")
    batches = [int(x) for x in args.batch.split(",")]
    specs = args.samplers.split(",")
    configs = [
        (kind, n, b, s, comp)
        for comp in comps
        for kind in kinds
        for n in ns
        for b in batches
        for s in specs
        # MOD-style has no batching; BILLY (one steered row) depends on neither composition nor kind
        if not (s == "mod" and b > 1) and not (s == "billy" and (comp, kind) != (comps[0], kinds[0]))
    ]
    if args.memory_only:
        configs, batches, args.repeats, args.lora_kernels = [], [], 1, ""
    runs: dict[str, list] = {}
    bar = tqdm(total=args.repeats * (len(configs) + len(batches)), desc="speed runs")
    for rep in range(args.repeats):
        floors = {}
        for b in batches:
            floors[b] = floor_run(
                floor_model, engine.tokenizer, SPEED_PROMPTS[:b], args.max_new_tokens, args.seed + rep
            )
            runs.setdefault(f"floor|b{b}", []).append(floors[b])
            bar.update(1)
        mods = {}
        for kind, n, b, spec, comp in configs:
            target, billy = targets(engine, kind, n, vectors, comp)
            drafted, _, proposal = spec.partition("@")
            name, _, k = drafted.partition(":")
            if name == "mod":
                r = mod_run(engine, SPEED_PROMPTS[:b], target, args.max_new_tokens, args.seed + rep)
                mods[(kind, n, comp)] = r
            elif name == "billy":
                r = engine_run(
                    engine, SPEED_PROMPTS[:b], billy, "fused", 1, args.max_new_tokens, args.seed + rep
                )
            else:  # "scr:2x8" = chunk 2, 8 candidates per round
                k, _, c = (k or "4").partition("x")
                r = engine_run(
                    engine,
                    SPEED_PROMPTS[:b],
                    target,
                    name,
                    int(k),
                    args.max_new_tokens,
                    args.seed + rep,
                    candidates=int(c or 1),
                    proposal=proposal or None,
                )
            r["vs_floor"] = r["tokens_per_s"] / floors[b]["tokens_per_s"]
            if (kind, n, comp) in mods:
                r["vs_mod"] = r["tokens_per_s"] / mods[(kind, n, comp)]["tokens_per_s"]
            tag = "" if comp == comps[0] else f"|{comp}"  # the first composition's keys carry no tag
            runs.setdefault(f"{spec}|{kind}|n{n}|b{b}{tag}", []).append(r)
            bar.update(1)
            bar.set_postfix_str(f"{spec} {kind} n={n} b={b}: {r['tokens_per_s']:.2f} tok/s")
        # every finished repeat on disk: a long run cut short keeps its runs
        write_json(Path(args.out) / "runs.partial.json", {"repeats_done": rep + 1, "runs": runs})
    kernel_runs = {}
    if args.lora_kernels:
        n = max(ns)
        for kern in args.lora_kernels.split(","):
            e = Engine(engine.models["base"], engine.tokenizer, lora_kernel=kern)
            e.adapters = engine.adapters
            e.vectors = engine.vectors
            target, _ = targets(e, "lora", n, vectors, comps[0])
            kernel_runs[kern] = [
                engine_run(e, SPEED_PROMPTS[:1], target, "fused", 1, args.max_new_tokens, args.seed + rep)
                for rep in range(args.repeats)
            ]
    memory = {}
    if not args.no_memory:
        memory["base_alone"] = memory_probe(args.base, 0, dtype=args.dtype)
        memory["base_plus_4_lora"] = memory_probe(args.base, 4, dtype=args.dtype)
        memory["base_plus_4_lora_gathered"] = memory_probe(args.base, 4, "gathered", dtype=args.dtype)
        a, b4 = memory["base_alone"]["peak_rss_mib"], memory["base_plus_4_lora"]["peak_rss_mib"]
        memory["ratio_4_lora_to_base"] = b4 / a
        memory["steady_ratio_4_lora_to_base"] = (
            memory["base_plus_4_lora"]["steady_rss_mib"] / memory["base_alone"]["steady_rss_mib"]
        )
        # the same, counting only what the model and generation add to the process (libraries excluded)
        a_m, b_m = (
            a - memory["base_alone"]["rss_before_model_mib"],
            b4 - memory["base_plus_4_lora"]["rss_before_model_mib"],
        )
        memory["model_ratio_4_lora_to_base"] = b_m / a_m
        memory["separate_full_models_estimate_mib"] = memory["base_alone"]["rss_before_model_mib"] + 5 * a_m
    summary = {
        key: {
            m: summarise(v, m)
            for m in (
                "tokens_per_s",
                "calls_per_token",
                "acceptance_rate",
                "peak_rss_mib",
                "vs_floor",
                "vs_mod",
            )
        }
        for key, v in runs.items()
    }
    kernels = {k: summarise(v, "tokens_per_s") for k, v in kernel_runs.items()}
    kernels["validation"] = validation_kernel_timing()
    if args.memory_only:
        kernels = {"validation": kernels["validation"]}
    result = {
        "command": command_line(__file__, argv),
        "machine": {**machine_info(args.device), "dtype": args.dtype},
        "compositions": comps,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "prompts": SPEED_PROMPTS,
        "steering_vectors": vector_note,
        "summary": summary,
        "runs": runs,
        "lora_kernels": kernels,
        "lora_kernel_runs": kernel_runs,
        "memory": memory,
        "goals": goals(summary, ns, kinds),
    }
    if args.memory_only:  # a separate record, so the full run's files stay
        write_results(args.out, result, markdown(result), name="memory.json", table_name="memory.md")
        return 0
    out = write_results(args.out, result, markdown(result), name="speed.json")
    plot(summary, out / "speed.png", max(ns), batches)
    return 0


def fmt(s: dict, digits: int = 2) -> str:
    if s["median"] is None:
        return ""
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}, {s['max']:.{digits}f}]"


def goals(summary: dict, ns: list[int], kinds: list[str]) -> dict:
    """The speed goals at n = max, batch 1 unless said, for the first composition (what was
    measured, not a pass/fail claim beyond it)."""
    out = {}
    n = max(ns)

    def med(key, metric="tokens_per_s"):
        return summary.get(key, {}).get(metric, {}).get("median")

    def keys(kind, b):  # sampler specs measured for this kind at batch b (first composition only)
        return [k.split("|")[0] for k in summary if k.endswith(f"|{kind}|n{n}|b{b}")]

    def best(kind, metric, samplers):  # the best median of `metric` among these samplers at batch 1
        vals = [med(f"{s}|{kind}|n{n}|b1", metric) for s in keys(kind, 1) if s.split(":")[0] in samplers]
        return max((v for v in vals if v is not None), default=None)

    if "lora" in kinds:
        if (fastest := best("lora", "vs_floor", ("fused", "speculative"))) is not None:
            out["fastest_exact_vs_floor"] = fastest
        if med(f"scr:4|lora|n{n}|b1") and med(f"fused|lora|n{n}|b1"):
            out["scr_default_acceptance"] = med(f"scr:4|lora|n{n}|b1", "acceptance_rate")
            out["scr_default_vs_fused"] = med(f"scr:4|lora|n{n}|b1") / med(f"fused|lora|n{n}|b1")
        b8 = {
            s: med(f"{s}|lora|n{n}|b8") / med(f"{s}|lora|n{n}|b1")
            for s in keys("lora", 8)
            if med(f"{s}|lora|n{n}|b1")
        }
        if b8:
            out["batch8_over_batch1"] = b8
        fused = med(f"fused|lora|n{n}|b1")
        for spec in keys("lora", 1):  # each drafting sampler against fused: the draft head's goals
            if spec.split(":")[0] in ("speculative", "scr") and fused and med(f"{spec}|lora|n{n}|b1"):
                out.setdefault("drafted_vs_fused", {})[spec] = med(f"{spec}|lora|n{n}|b1") / fused
                out.setdefault("drafted_acceptance", {})[spec] = med(
                    f"{spec}|lora|n{n}|b1", "acceptance_rate"
                )
    if "full" in kinds and (drafted := best("full", "vs_mod", ("speculative", "scr"))) is not None:
        out["full_models_best_drafted_vs_mod"] = drafted
    return out


def markdown(r: dict) -> str:
    lines = [
        f"Command: `{r['command']}`",
        "",
        f"Machine: {r['machine']}; {r['max_new_tokens']} new tokens; "
        f"median [min, max] over {r['repeats']} repeats; ratios taken within each repeat.",
        "",
        "| config | tokens/s | x floor | x MOD-style | forwards / token | acceptance | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, s in r["summary"].items():
        lines.append(
            f"| {key} | {fmt(s['tokens_per_s'])} | {fmt(s['vs_floor'])} | {fmt(s['vs_mod'])} | "
            f"{fmt(s['calls_per_token'])} | {fmt(s['acceptance_rate'])} | {fmt(s['peak_rss_mib'], 0)} |"
        )
    if r["lora_kernels"]:
        lines += [
            "",
            "Multi-LoRA kernels on `fused` (n = max, batch 1), tokens/s: "
            + ", ".join(f"{k} {fmt(v)}" for k, v in r["lora_kernels"].items() if k != "validation"),
            f"Validation kernel (9 policies x 4 candidates x 4 tokens x 49152): {r['lora_kernels']['validation']}",
        ]
    if r["memory"]:
        m = r["memory"]
        lines += [
            "",
            f"Memory (fresh processes, fused, 16 tokens; stacked LoRA kernel): steady state after generating "
            f"{m['base_alone']['steady_rss_mib']:.0f} MiB for the base alone vs "
            f"{m['base_plus_4_lora']['steady_rss_mib']:.0f} MiB with 4 LoRA experts (ratio "
            f"{m['steady_ratio_4_lora_to_base']:.2f}); peak while generating "
            f"{m['base_alone']['peak_rss_mib']:.0f} vs {m['base_plus_4_lora']['peak_rss_mib']:.0f} MiB "
            f"(gathered kernel: {m['base_plus_4_lora_gathered']['peak_rss_mib']:.0f} MiB) (ratio "
            f"{m['ratio_4_lora_to_base']:.2f}; above the {m['base_alone']['rss_before_model_mib']:.0f} MiB the libraries take before "
            f"any model is loaded: {m['model_ratio_4_lora_to_base']:.2f}); five separate full models would need "
            f"~{m['separate_full_models_estimate_mib']:.0f} MiB.",
        ]
    lines += ["", f"Goals as measured: {json.dumps(r['goals'])}"]
    return "\n".join(lines) + "\n"


def summary_kind(summary: dict) -> str:
    """The attribute kind of the first engine run in the summary (what the plot shows without LoRA)."""
    return next((k.split("|")[1] for k in summary if not k.startswith("floor")), "lora")


def plot(summary: dict, path: Path, n: int, batches: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4), squeeze=False)
    for ax, b in zip(axes[0], batches):
        kind = "lora" if any(k.endswith(f"|lora|n{n}|b{b}") for k in summary) else summary_kind(summary)
        keys = [k for k in summary if k.endswith(f"|{kind}|n{n}|b{b}")]
        names = ["floor"] + [k.split("|")[0] for k in keys]
        vals = [summary[f"floor|b{b}"]["tokens_per_s"]] + [summary[k]["tokens_per_s"] for k in keys]
        med = [v["median"] for v in vals]
        err = [[m - v["min"] for m, v in zip(med, vals)], [v["max"] - m for m, v in zip(med, vals)]]
        ax.bar(names, med, yerr=err, color=["grey"] + ["C0"] * len(keys))
        ax.set_title(f"{n} {kind} attributes, batch {b}")
        ax.set_ylabel("tokens/s (all sequences)")
        ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())

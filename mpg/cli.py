"""The `mpg` command line: generate, train-expert, extract-vectors, export-steer, info."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .threads import set_wait_policy

set_wait_policy()  # before anything loads torch (mpg.threads)

THREADS_HELP = (
    "intra-op threads: 'auto' (default: the cores other processes leave idle, re-measured while running; "
    "mpg.threads) or a fixed count"
)
DTYPE_HELP = (
    "float32, bfloat16, float16 or auto (the checkpoint's); default: bfloat16 on a CPU with native bf16 "
    "(AVX512-BF16 / AMX), float32 elsewhere"
)


def _trait(text: str) -> tuple[str, float]:
    """'TEXT' or 'TEXT::WEIGHT' -> (text, weight)."""
    body, sep, w = text.rpartition("::")
    if not sep:
        return text, 1.0
    try:
        return body, float(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"trait weight {w!r} is not a number") from None


def _threads(value: str):
    """--threads: 'auto' or an integer >= 1."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--threads takes 'auto' or an integer >= 1, got {value!r}")
    return n


def _generate(args) -> int:
    from transformers import TextStreamer

    from .engine import Engine
    from .personas import persona
    from .threads import ThreadPolicy

    ThreadPolicy(args.threads).apply()

    device_map = args.device_map
    if device_map and device_map.lstrip().startswith("{"):
        try:
            device_map = json.loads(device_map)
        except ValueError as e:
            raise ValueError(f"--device-map is not valid JSON: {e}") from None
    engine = Engine.from_pretrained(args.base, device_map=device_map or None, dtype=args.dtype)
    if args.draft_head:
        engine.load_draft_head(args.draft_head)
    roleplaying = args.profile is not None or args.personality is not None
    mbti = args.persona if args.persona is not None else (None if roleplaying else "ENTJ")
    p = persona(
        engine,
        mbti,
        profile=args.profile,
        personality=args.personality,
        traits=args.trait or [],
        experts=args.experts,
        composition=args.composition,
    )
    prompt = args.prompt if args.prompt is not None else ""
    if p.needs_prompt and not prompt.strip():
        raise ValueError("empty prompt: give the question or instruction to answer")
    print(f"mpg: persona {p.describe()}", file=sys.stderr)
    streamer = None if args.no_stream else TextStreamer(engine.tokenizer, skip_special_tokens=True)
    out = engine.generate(
        prompt,
        target=p.target(aggregator=args.aggregator, lam=args.lam),
        sampler=args.sampler,
        proposal=args.proposal,
        chunk_size=args.chunk_size,
        adaptive_chunk=args.adaptive_chunk,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        streamer=streamer,
    )
    if streamer is None:
        print(out.texts[0])
    if args.stats:
        print(json.dumps(out.stats[0].as_json(), indent=2, default=str), file=sys.stderr)
    return 0


def _serve(args) -> int:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f'mpg serve needs the serve extra ({", ".join(missing)} missing): pip install "mpg[serve]"'
        )
    from .engine import Engine
    from .extract import PersonaVectors
    from .personas import load_experts, parse_mbti
    from .server import serve
    from .threads import ThreadPolicy

    if args.max_batch < 1 or args.max_queue < 0 or args.max_tokens < 1:
        raise ValueError("--max-batch and --max-tokens must be >= 1 and --max-queue >= 0")
    if args.prefill_chunk < 1 or args.max_merged_adapters < 1:
        raise ValueError("--prefill-chunk and --max-merged-adapters must be >= 1")
    threads = ThreadPolicy(args.threads)
    threads.apply()
    if args.persona:
        parse_mbti(args.persona)  # a bad default persona fails now, not on the first request
    engine = Engine.from_pretrained(args.base, dtype=args.dtype)
    if args.draft_head:
        engine.load_draft_head(args.draft_head)
    else:  # loaded now, not on a first request: a server does not change its model while it serves
        engine.find_draft_head()
    loaded = load_experts(engine, args.experts)
    for path in args.vectors or []:
        for name, vector in PersonaVectors.load(path).vectors.items():
            engine.add_steering_vector(name, vector)
    print(
        f"mpg: serving on http://{args.host}:{args.port}/v1 (experts: {', '.join(loaded) or 'prompted'}; "
        f"steering vectors: {', '.join(engine.vectors) or 'none'}); Ctrl-C stops",
        file=sys.stderr,
    )
    serve(
        engine,
        host=args.host,
        port=args.port,
        shutdown_timeout=args.shutdown_timeout,
        log_level=args.log_level,
        experts=args.experts,
        persona=args.persona or None,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_tokens=args.max_tokens,
        prefill_chunk=args.prefill_chunk,
        max_merged=args.max_merged_adapters,
        threads=threads,
    )
    return 0


def _extract(args) -> int:
    from .engine import Engine
    from .extract import (
        CREATIVE_ROLES,
        DEFAULT_QUESTIONS,
        NEUTRAL_PROMPTS,
        extract_persona_vectors,
        mbti_personas,
        read_lines_or_json,
    )

    sets = args.personas.split(",")
    if all(x in ("creative", "mbti") for x in sets):
        personas = {}
        for x in sets:
            personas.update(CREATIVE_ROLES if x == "creative" else mbti_personas(args.data))
    else:
        personas = read_lines_or_json(args.personas)
        if not isinstance(personas, dict) or not all(isinstance(v, list) and v for v in personas.values()):
            raise ValueError(f"{args.personas} must be a JSON object: persona name -> list of system prompts")
    questions = read_lines_or_json(args.questions) if args.questions else DEFAULT_QUESTIONS
    engine = Engine.from_pretrained(args.base)
    vectors = extract_persona_vectors(
        engine,
        personas,
        NEUTRAL_PROMPTS,
        questions,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    vectors.save(args.out)
    for name, norms in vectors.norms().items():
        mid = len(norms) * 2 // 3
        print(f"{name}: {len(norms)} blocks, |v| at block {mid} = {norms[mid]:.2f}")
    print(f"saved {args.out}.safetensors and {args.out}.json")
    return 0


def _train_expert(args) -> int:
    from .training import ExpertSettings, train_expert

    settings = ExpertSettings(
        epochs=args.epochs,
        learning_rate=args.lr,
        beta=args.beta,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        top_layers=args.top_layers or None,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        max_train=args.max_train or None,
        mirror_sides=args.mirror_sides,
        bf16=False if args.no_bf16 else None,
        seed=args.seed,
        trainer=args.trainer,
    )
    command = "mpg " + " ".join(shlex.quote(a) for a in args.argv)
    record = train_expert(
        args.train, args.out, base=args.base, test_file=args.test, settings=settings, command=command
    )
    held = record["metrics"].get("held_out")
    if held:
        print(
            f"held-out reward accuracy {held['reward_accuracy']:.3f} (base 0 / 0.5 with ties split); "
            f"likelihood accuracy {held['likelihood_accuracy']:.3f} vs base {held['base_likelihood_accuracy']:.3f}"
        )
    print(f"saved adapter and model card in {args.out}")
    return 0


def _save_features(paths, train, test, data: dict) -> None:
    """train-draft's cache: both feature sets and the description of their data."""
    train.save(paths[0])
    test.save(paths[1])
    paths[2].write_text(json.dumps(data))


def _train_draft(args) -> int:
    import time

    from .draft_head import SHIPPED_HEAD
    from .draft_training import (
        DraftTrainSettings,
        FeatureSet,
        add_sampled_sets,
        build_feature_sets,
        composition_name,
        head_card,
        held_out_acceptance,
        is_held_out_type,
        train_draft_head,
        write_card_md,
    )
    from .engine import Engine
    from .hardware import cpu_has_bf16, cpu_name

    out = Path(args.out) if args.out else SHIPPED_HEAD
    work = out / "work"  # features and checkpoints (resumable); not shipped
    work.mkdir(parents=True, exist_ok=True)
    engine = Engine.from_pretrained(args.base, dtype=args.dtype)
    model = engine.models["base"]
    t0 = time.perf_counter()
    cached = work / "features.pt", work / "features_test.pt", work / "data.json"
    if args.resume and all(p.exists() for p in cached):
        data = json.loads(cached[2].read_text())
        if data.get("composition") != composition_name(args.composition):
            raise SystemExit(
                f"mpg train-draft: the features in {work} were read for the composition "
                f"{data.get('composition')!r}, not {composition_name(args.composition)!r}; pass "
                "--composition to match, or use --no-resume or another --out"
            )
        train, test = FeatureSet.load(cached[0]), FeatureSet.load(cached[1])
    else:
        train, test, data = build_feature_sets(
            engine,
            Path(args.data),
            args.experts,
            lams=tuple(float(x) for x in args.lams.split(",")),
            train_texts=args.texts,
            test_texts=args.test_texts,
            roleplay_train=args.roleplay,
            roleplay_test=args.roleplay_test,
            max_tokens=args.max_tokens,
            composition=args.composition,
        )
        data["host"] = f"{cpu_name()}, bf16 {'native' if cpu_has_bf16() else 'emulated'}"
        data["feature_seconds"] = round(time.perf_counter() - t0, 1)
        _save_features(cached, train, test, data)
    # sampled answers are added to cached features once; a resumed run without --sampled keeps them
    want = (args.sampled, args.sampled_test)
    have = (data.get("sampled_per_target", 0), data.get("sampled_test", 0))
    if any(want) and want != have:
        if any(have):
            raise SystemExit(
                f"mpg train-draft: {work} holds features of other sampled answers ({have[0]} per "
                f"target, {have[1]} held out); use --no-resume or another --out"
            )
        data |= add_sampled_sets(
            engine,
            train,
            test,
            Path(args.data),
            args.experts,
            lams=tuple(data["lams"]),
            per_target=args.sampled,
            test_per_target=args.sampled_test,
            max_tokens=data["max_tokens"],
            composition=args.composition,
            seed=args.seed,
        )
        _save_features(cached, train, test, data)
    settings = DraftTrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        window=args.window,
        seed=args.seed,
        sampled_share=args.sampled_share,
    )
    head = train_draft_head(
        train, model, settings, work, keep=lambda n: not is_held_out_type(n), resume=args.resume
    )
    acceptance = held_out_acceptance(head, model, test)
    card = head_card(settings, data, acceptance, head.train_seconds, model)
    head.save(out, card=card)
    write_card_md(out, card)
    for name, by_depth in acceptance.items():
        print(
            f"{name}: "
            + ", ".join(f"{'depth ' if d != 'anchor' else ''}{d} {a:.3f}" for d, a in by_depth.items())
        )
    print(f"saved the draft head and its card in {out}")
    return 0


def _export_steer(args) -> int:
    from .eval.steering.lm_eval_export import export_lm_eval_steer
    from .extract import PersonaVectors

    vectors = PersonaVectors.load(args.vectors)
    names = args.names.split(",")
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    export_lm_eval_steer(vectors, args.out, names, weights, layer=args.layer, alpha=args.alpha)
    print(f"saved {args.out}: lm_eval --model steered --model_args pretrained=BASE,steer_path={args.out}")
    return 0


def _calibrate_expert(args) -> int:
    from tqdm.auto import tqdm

    from .composition import measure_ratio_spread
    from .engine import Engine
    from .expert_file import write_spreads
    from .policies import Attribute
    from .training import load_preferences

    rows = load_preferences(args.pairs)
    if args.max_pairs < 1:
        raise ValueError("--max-pairs must be at least 1")
    engine = Engine.from_pretrained(args.base, dtype="float32")
    engine.load_adapter("expert", args.expert)
    by_side: dict[str, list[dict]] = {}
    for r in rows:  # MBTI pairs name their side; role-play pairs have one context
        by_side.setdefault(r.get("side") or "roleplay", []).append(r)
    spreads = {}
    expert = Attribute.expert("expert", None)  # the adapter over the base, both under the pair's prompt
    for side, side_rows in sorted(by_side.items()):
        chosen = side_rows[: args.max_pairs]
        spreads[side] = measure_ratio_spread(
            engine, expert, tqdm(chosen, desc=f"ratio spread, side {side}"), prompt_key="prompt"
        )
    source = f"{args.pairs}: the first {args.max_pairs} pairs of each side, chosen and rejected answers"
    write_spreads(args.expert, spreads, source)
    print("ratio spread (RMS per-token log-ratio): " + ", ".join(f"{k} {v:.3f}" for k, v in spreads.items()))
    return 0


def _info(args) -> int:
    from . import __version__
    from .default_model import MODEL_DIR, cache_dir, gguf_path

    print(f"mpg {__version__}")
    try:
        print(f"default model GGUF: {gguf_path()}")
    except FileNotFoundError as e:
        print(f"default model GGUF: not installed ({e})")
    cached = cache_dir() / MODEL_DIR
    print(
        f"default model cache: {cached} ({'converted' if (cached / 'config.json').exists() else 'not yet converted'})"
    )
    from .hardware import cpu_name, default_dtype

    print(f"default dtype on the CPU: {str(default_dtype('cpu')).removeprefix('torch.')} ({cpu_name()})")
    from .personas import SHIPPED_EXPERTS

    folders = sorted(d for d in SHIPPED_EXPERTS.glob("*") if (d / "adapter_config.json").exists())
    print(f"shipped experts ({SHIPPED_EXPERTS}): {len(folders) or 'none'}")
    for d in folders:
        held = {}
        if (d / "metrics.json").exists():
            held = json.loads((d / "metrics.json").read_text()).get("metrics", {}).get("held_out") or {}
        fig = (
            f"held-out reward accuracy {held['reward_accuracy']:.2f}, likelihood accuracy "
            f"{held['likelihood_accuracy']:.2f} (base {held['base_likelihood_accuracy']:.2f})"
            if held
            else ""
        )
        if (d / "metrics.json").exists():
            record = json.loads((d / "metrics.json").read_text())
            m, st = record.get("metrics", {}), record.get("settings", {})
            fig += (
                f"; {m.get('train_pairs')} pairs{' mirrored' if st.get('mirror_sides') else ''} "
                f"x {st.get('epochs')} epochs, "
                f"{m.get('wall_seconds_to_adapter')} s ({st.get('trainer', 'trl')})"
            )
        from .expert_file import expert_spreads

        spreads = expert_spreads(d)
        if spreads:
            fig += "; ratio spread " + ", ".join(f"{k} {v:.2f}" for k, v in spreads.items())
        print(f"  {d.name}: {fig}")
    from .draft_head import HEAD_CONFIG, SHIPPED_HEAD

    if (SHIPPED_HEAD / HEAD_CONFIG).exists():
        card = json.loads((SHIPPED_HEAD / HEAD_CONFIG).read_text()).get("card", {})
        acc = card.get("held_out_acceptance", {}).get("held-out prompts", {})
        fig = ", ".join(f"{k} {v:.2f}" for k, v in acc.items())
        print(f"shipped draft head ({SHIPPED_HEAD}): held-out acceptance by depth: {fig or 'not recorded'}")
    else:
        print("shipped draft head: none")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mpg", description="Multi-personality generation at decoding time.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate text showing a mix of personality traits")
    g.add_argument("prompt", nargs="?", default=None, help="the question (optional for role-play)")
    g.add_argument("--persona", default=None, help="MBTI type (ENTJ, the default) or weights (E=1,N=0.5)")
    g.add_argument("--profile", default=None, help="role-play profile text (with --personality)")
    g.add_argument("--personality", default=None, help="role-play personality text (with --profile)")
    g.add_argument(
        "--trait",
        action="append",
        type=_trait,
        metavar="TEXT[::WEIGHT]",
        help="extra prompted attribute: a trait system prompt over a neutral one (repeatable)",
    )
    g.add_argument(
        "--experts",
        default="auto",
        help="'auto' (shipped experts if installed), 'shipped', 'prompted' (no adapters) or a folder",
    )
    g.add_argument(
        "--base", default=None, help="local Hugging Face model folder (default: embedded SmolLM2-135M)"
    )
    g.add_argument(
        "--device-map",
        default=None,
        help="shard the base across devices with accelerate: 'auto', 'balanced', or a JSON object "
        "{module: device} (e.g. '{\"model.layers.0\": 0, ...}'); default: one device",
    )
    g.add_argument("--dtype", default=None, help=DTYPE_HELP)
    g.add_argument(
        "--sampler",
        default="fused",
        choices=["fused", "speculative", "scr"],
        help="fused (default: exact, and the fastest sampler measured here: docs/results.md#speed), "
        "speculative (exact with any --proposal; faster only where its drafts are accepted), or scr (the "
        "MPG paper's chunk-level sampler: approximate, its output drifts toward its proposal; see the README)",
    )
    g.add_argument(
        "--composition",
        default=None,
        help="how the experts compose: 'AGGREGATOR[,lam=X][,weights=given|sum1|spread][,anchor=base|prompt]"
        "[,plausibility=ALPHA][,guard=anchor|union|mixture][,ratio=trait|anchor|opposite]' "
        "(default: mpg.personas.DEFAULT_COMPOSITION; see the README)",
    )
    g.add_argument(
        "--aggregator", default=None, choices=["product", "mixture"], help="overrides the composition's"
    )
    g.add_argument(
        "--lam",
        type=float,
        default=None,
        help="strength of every attribute (0 = anchor); overrides the composition's",
    )
    g.add_argument(
        "--proposal",
        default="anchor",
        choices=["anchor", "merged", "prompt", "head"],
        help="what drafts (speculative, scr): the anchor; the anchor plus the experts' LoRA deltas summed "
        "into one adapter (merged); the anchor under a system prompt naming every trait (prompt); or the "
        "draft head, which predicts the composed target's features (head: the shipped one, or --draft-head)",
    )
    g.add_argument(
        "--draft-head", default=None, help="a draft head folder from mpg train-draft (for --proposal head)"
    )
    g.add_argument("--chunk-size", type=int, default=4)
    g.add_argument(
        "--adaptive-chunk",
        action="store_true",
        help="per-prompt chunk size: +2 after a fully accepted draft, else -1 (from --chunk-size, at most 16)",
    )
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--stats", action="store_true", help="print sampler statistics (JSON) to stderr")
    g.add_argument("--no-stream", action="store_true", help="print the text at the end instead of streaming")
    g.add_argument("--threads", type=_threads, default="auto", help=THREADS_HELP)
    g.set_defaults(func=_generate)
    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server with per-request personas")
    s.add_argument(
        "--base", default=None, help="local Hugging Face model folder (default: embedded SmolLM2-135M)"
    )
    s.add_argument(
        "--experts", default="auto", help="'auto', 'shipped', 'prompted' or a folder (loaded at start)"
    )
    s.add_argument(
        "--persona", default="ENTJ", help="the persona of model 'mpg' (other models: mpg-<type>, mpg-base)"
    )
    s.add_argument("--vectors", action="append", help="persona vectors (extract-vectors output) for 'steer'")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-batch", type=int, default=16, help="sequences generated together at most")
    s.add_argument("--max-queue", type=int, default=64, help="requests waiting at most (more: HTTP 429)")
    s.add_argument("--max-tokens", type=int, default=1024, help="the largest max_tokens a request may ask")
    s.add_argument("--dtype", default=None, help=DTYPE_HELP)
    s.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM"
    )
    s.add_argument("--log-level", default="warning", help="uvicorn's log level (info logs every request)")
    s.add_argument("--threads", type=_threads, default="auto", help=THREADS_HELP)
    s.add_argument(
        "--prefill-chunk",
        type=int,
        default=256,
        help="context tokens per row a newcomer's prefill feeds between two decode steps",
    )
    s.add_argument(
        "--draft-head",
        default=None,
        help="a draft head folder from mpg train-draft for proposal 'head' (default: the shipped one, if it fits)",
    )
    s.add_argument(
        "--max-merged-adapters",
        type=int,
        default=4,
        help="summed adapters of proposal='merged' kept loaded (least recently used unloaded first)",
    )
    s.set_defaults(func=_serve)
    x = sub.add_parser(
        "extract-vectors", help="extract persona vectors (mean block outputs, persona - neutral)"
    )
    x.add_argument(
        "--personas",
        default="creative",
        help="'creative' (BILLY's 3 roles), 'mbti' (8 letters, needs --data), 'mbti,creative' (all 11) "
        "or a JSON file name -> prompts",
    )
    x.add_argument("--data", default="../shared/data", help="shared data folder (for --personas mbti)")
    x.add_argument(
        "--questions",
        default=None,
        help="JSON list or text file, one question per line (default: built-in 5)",
    )
    x.add_argument("--samples", type=int, default=2, help="answers per (prompt, question)")
    x.add_argument("--max-new-tokens", type=int, default=48)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument(
        "--base", default=None, help="local Hugging Face model folder (default: embedded SmolLM2-135M)"
    )
    x.add_argument("--out", default="out/vectors/persona_vectors", help="output path without suffix")
    x.set_defaults(func=_extract)
    e = sub.add_parser(
        "export-steer", help="write merged persona vectors as an lm-evaluation-harness steer file"
    )
    e.add_argument("vectors", help="persona vectors path (without suffix), from extract-vectors")
    e.add_argument("--names", required=True, help="comma-separated personas to merge (e.g. E,N,T,J)")
    e.add_argument("--weights", default=None, help="comma-separated merge weights (default: equal)")
    e.add_argument("--layer", type=int, required=True)
    e.add_argument("--alpha", type=float, required=True)
    e.add_argument("--out", required=True, help="output .pt file")
    e.set_defaults(func=_export_steer)
    t = sub.add_parser(
        "train-expert", help="train one attribute expert: a DPO LoRA adapter from preference pairs"
    )
    t.add_argument("train", help="JSONL of {prompt, chosen, rejected} pairs")
    t.add_argument(
        "--test", default=None, help="held-out JSONL pairs: preference accuracy goes in the model card"
    )
    t.add_argument("--out", required=True, help="adapter folder to write")
    t.add_argument(
        "--base", default=None, help="local Hugging Face model folder (default: embedded SmolLM2-135M)"
    )
    t.add_argument("--max-train", type=int, default=160, help="random subset of N training pairs (0 = all)")
    t.add_argument(
        "--mirror-sides",
        action="store_true",
        help="MBTI pairs: also train each pair from the other side (its prompt, chosen and rejected swapped)",
    )
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--beta", type=float, default=0.1)
    t.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = 2r) on q,k,v,o projections")
    t.add_argument("--top-layers", type=int, default=0, help="LoRA on the last N blocks only (0 = all)")
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--grad-accum", type=int, default=2)
    t.add_argument("--max-length", type=int, default=256, help="tokens per prompt+answer (longer are cut)")
    t.add_argument(
        "--no-bf16",
        action="store_true",
        help="train in float32 (default: bf16 autocast where the CPU has native bf16; docs/results.md#shipped-experts)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--trainer",
        default="shared-prompt",
        choices=["shared-prompt", "trl"],
        help="shared-prompt: mpg's DPO loop, each pair's prompt run once (default); trl: TRL's DPOTrainer",
    )
    t.set_defaults(func=_train_expert)
    d = sub.add_parser(
        "train-draft",
        help="train a draft head for proposal='head': the composed targets' own features, teacher-forced",
    )
    d.add_argument("--out", default=None, help="head folder to write (default: the package's shipped head)")
    d.add_argument(
        "--base", default=None, help="local Hugging Face model folder (default: embedded SmolLM2-135M)"
    )
    d.add_argument("--experts", default="auto", help="'auto', 'shipped', 'prompted' or an experts folder")
    d.add_argument("--data", default="../shared/data", help="shared data folder (MBTI pairs, role-play)")
    d.add_argument("--composition", default=None, help="the composition trained on (default: persona()'s)")
    d.add_argument("--lams", default="0.5,1", help="comma-separated strengths trained on")
    d.add_argument("--texts", type=int, default=400, help="MBTI training texts (answers of the train split)")
    d.add_argument("--test-texts", type=int, default=48, help="held-out texts (the test split)")
    d.add_argument("--roleplay", type=int, default=80, help="role-play personas trained on")
    d.add_argument("--roleplay-test", type=int, default=20, help="held-out role-play personas")
    d.add_argument("--max-tokens", type=int, default=64, help="response tokens per text")
    d.add_argument(
        "--sampled",
        type=int,
        default=0,
        help="answers sampled from each trained target itself (train-split instructions), trained on",
    )
    d.add_argument(
        "--sampled-test",
        type=int,
        default=0,
        help="answers sampled from each MBTI type (largest lam, test-split instructions), held out",
    )
    d.add_argument(
        "--sampled-share",
        type=float,
        default=0.5,
        help="share of each batch drawn from the sampled answers (when there are any)",
    )
    d.add_argument("--steps", type=int, default=600)
    d.add_argument("--batch-size", type=int, default=16, help="(text, persona) samples per step")
    d.add_argument("--lr", type=float, default=1e-3)
    d.add_argument("--window", type=int, default=16, help="positions the head attends to")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--dtype", default=None, help="the base's dtype while reading features (default: engine's)"
    )
    d.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start afresh (default: reuse the features and the checkpoint in OUT/work)",
    )
    d.set_defaults(func=_train_draft)
    c = sub.add_parser(
        "calibrate-expert",
        help="measure an expert's ratio spread (for --composition ...,weights=spread) into its mpg_expert.json",
    )
    c.add_argument("expert", help="the expert adapter folder (with mpg_expert.json)")
    c.add_argument("--pairs", required=True, help="held-out JSONL pairs (MBTI pairs carry a 'side' each)")
    c.add_argument("--max-pairs", type=int, default=24, help="pairs per side measured (the first N)")
    c.add_argument("--base", default=None, help="local Hugging Face model folder (default: embedded SmolLM2)")
    c.set_defaults(func=_calibrate_expert)
    i = sub.add_parser("info", help="what is installed and cached")
    i.set_defaults(func=_info)
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError, argparse.ArgumentTypeError) as e:
        print(f"mpg: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""The `mpg` command line: generate, info."""
from __future__ import annotations

import argparse
import json
import sys


def _generate(args) -> int:
    from transformers import TextStreamer

    from .engine import Engine
    from .personas import prompted_mbti

    attributes = prompted_mbti(args.persona)
    engine = Engine.from_pretrained(args.base)
    streamer = None if args.no_stream else TextStreamer(engine.tokenizer, skip_special_tokens=True)
    out = engine.generate(args.prompt, attributes, sampler=args.sampler, aggregator=args.aggregator,
                          lam=args.lam, chunk_size=args.chunk_size, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_p=args.top_p, seed=args.seed, streamer=streamer)
    if streamer is None:
        print(out.texts[0])
    if args.stats:
        print(json.dumps(out.stats[0].as_dict(), indent=2, default=str), file=sys.stderr)
    return 0


def _extract(args) -> int:
    from .engine import Engine
    from .extract import (CREATIVE_ROLES, DEFAULT_QUESTIONS, NEUTRAL_PROMPTS, extract_persona_vectors, mbti_personas,
                          read_lines_or_json)

    if args.personas == "creative":
        personas = CREATIVE_ROLES
    elif args.personas == "mbti":
        personas = mbti_personas(args.data)
    else:
        personas = read_lines_or_json(args.personas)
        if not isinstance(personas, dict) or not all(isinstance(v, list) and v for v in personas.values()):
            raise ValueError(f"{args.personas} must be a JSON object: persona name -> list of system prompts")
    questions = read_lines_or_json(args.questions) if args.questions else DEFAULT_QUESTIONS
    engine = Engine.from_pretrained(args.base)
    vectors = extract_persona_vectors(engine, personas, NEUTRAL_PROMPTS, questions, samples=args.samples,
                                      max_new_tokens=args.max_new_tokens, seed=args.seed)
    vectors.save(args.out)
    for name, norms in vectors.norms().items():
        mid = len(norms) * 2 // 3
        print(f"{name}: {len(norms)} blocks, |v| at block {mid} = {norms[mid]:.2f}")
    print(f"saved {args.out}.safetensors and {args.out}.json")
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
    print(f"default model cache: {cached} ({'converted' if (cached / 'config.json').exists() else 'not yet converted'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mpg", description="Multi-personality generation at decoding time.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate text showing a mix of personality traits")
    g.add_argument("prompt")
    g.add_argument("--persona", default="ENTJ", help="MBTI type (ENTJ) or weights (E=1,N=0.5)")
    g.add_argument("--base", default=None, help="local Hugging Face model folder (default: embedded SmolLM2-135M)")
    g.add_argument("--sampler", default="scr", choices=["fused", "speculative", "scr"])
    g.add_argument("--aggregator", default="product", choices=["product", "mixture"])
    g.add_argument("--lam", type=float, default=1.0, help="strength of every attribute (0 = base model)")
    g.add_argument("--chunk-size", type=int, default=4)
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--stats", action="store_true", help="print sampler statistics (JSON) to stderr")
    g.add_argument("--no-stream", action="store_true", help="print the text at the end instead of streaming")
    g.set_defaults(func=_generate)
    x = sub.add_parser("extract-vectors", help="extract persona vectors (mean block outputs, persona - neutral)")
    x.add_argument("--personas", default="creative",
                   help="'creative' (BILLY's 3 roles), 'mbti' (8 letters, needs --data) or a JSON file name -> prompts")
    x.add_argument("--data", default="../shared/data", help="shared data folder (for --personas mbti)")
    x.add_argument("--questions", default=None, help="JSON list or text file, one question per line (default: built-in 5)")
    x.add_argument("--samples", type=int, default=2, help="answers per (prompt, question)")
    x.add_argument("--max-new-tokens", type=int, default=48)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--base", default=None, help="local Hugging Face model folder (default: embedded SmolLM2-135M)")
    x.add_argument("--out", default="out/vectors/persona_vectors", help="output path without suffix")
    x.set_defaults(func=_extract)
    i = sub.add_parser("info", help="what is installed and cached")
    i.set_defaults(func=_info)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"mpg: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

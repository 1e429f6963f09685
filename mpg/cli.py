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

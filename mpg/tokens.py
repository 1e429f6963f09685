"""The two token rules every consumer shares: which id pads a batch, and which ids end a response.

Why one place: padding ids only ever sit under a mask, but a tokenizer without a pad token used to be
padded with 0 in some modules and with EOS in others; and the engine stopped on the generation
config's EOS while the evaluation harness stripped the tokenizer's as well. Both rules live here.
"""

from __future__ import annotations

__all__ = ["pad_token_id", "eos_token_ids"]


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad token, else its EOS token, else 0 (always masked out, so any valid id works)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def eos_token_ids(model, tokenizer, override: int | list[int] | None = None) -> frozenset[int]:
    """Token ids that end a response: `override` when given (an id, a list; [] = never stop), else every
    id named by the model's generation config plus the tokenizer's EOS token."""
    if override is not None:
        return frozenset([int(override)] if isinstance(override, int) else (int(t) for t in override))
    gen = getattr(model, "generation_config", None)
    ids = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return frozenset(int(t) for t in ids)

"""Samplers: each advances every sequence of a `Batch` by zero or more tokens per step.

- `fused`: exact p_1, one scoring pass per token.
- `speculative`: exact p_1, drafts k tokens from a proposal and verifies them in one pass.
- `scr`: the MPG paper's chunk-level rejection sampler, targeting p_k with an estimated bound.

The acceptance decisions themselves are pure functions in `rules.py`; drafts come from a `Drafter`
(`drafting.py`); per-sequence state and statistics are in `state.py`, the knobs in `config.py`."""

from .base import Sampler
from .batch import Batch
from .config import SamplerConfig, ScrConfig
from .fused import Fused
from .scr import Scr
from .speculative import Speculative
from .state import Advance, Sequence, SequenceSettings, SequenceStats, prompt_rng

SAMPLERS: dict[str, Sampler] = {s.name: s for s in (Fused(), Speculative(), Scr())}

__all__ = [
    "SAMPLERS",
    "Advance",
    "Batch",
    "Sampler",
    "SamplerConfig",
    "ScrConfig",
    "Sequence",
    "SequenceSettings",
    "SequenceStats",
    "prompt_rng",
]

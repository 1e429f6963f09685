"""Samplers: each is one step function that advances every sequence of a Batch by zero or more tokens.

The acceptance decisions themselves are pure functions in `rules.py`."""

from .common import SamplerConfig, SequenceStats
from .fused import fused_step
from .scr import scr_step
from .speculative import speculative_step

SAMPLERS = {"fused": fused_step, "speculative": speculative_step, "scr": scr_step}

__all__ = ["SAMPLERS", "SamplerConfig", "SequenceStats", "fused_step", "speculative_step", "scr_step"]

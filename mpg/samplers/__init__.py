"""Samplers: each is one step function that extends a Sequence by zero or more tokens."""
from .common import SamplerConfig, SequenceStats
from .fused import fused_step
from .scr import scr_step
from .speculative import speculative_step

SAMPLERS = {"fused": fused_step, "speculative": speculative_step, "scr": scr_step}

__all__ = ["SAMPLERS", "SamplerConfig", "SequenceStats", "fused_step", "speculative_step", "scr_step"]

"""mpg: multi-personality generation at decoding time."""

from .engine import Engine
from .generation import GenerateConfig, GenerateOutput
from .policies import Attribute, Policy, Target
from .samplers import SamplerConfig, SequenceStats
from .steering import Steer

__version__ = "0.1.0"
__all__ = [
    "Attribute",
    "Engine",
    "GenerateConfig",
    "GenerateOutput",
    "Policy",
    "SamplerConfig",
    "SequenceStats",
    "Steer",
    "Target",
]

"""mpg: multi-personality generation at decoding time."""
from .engine import Engine, GenerateOutput
from .policies import Attribute, Policy, Target
from .samplers import SamplerConfig, SequenceStats
from .steering import Steer

__version__ = "0.1.0"
__all__ = ["Engine", "GenerateOutput", "Attribute", "Policy", "Target", "SamplerConfig", "SequenceStats", "Steer"]

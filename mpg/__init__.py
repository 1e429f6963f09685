"""mpg: multi-personality generation at decoding time.

The public names load on first use, so that `mpg`'s command line can set OpenMP's environment
(`mpg.threads`) before anything imports torch."""

import importlib

__version__ = "0.1.0"
_EXPORTS = {
    "Attribute": ".policies",
    "Conversation": ".chat",
    "Engine": ".engine",
    "GenerateConfig": ".generation",
    "GenerateOutput": ".generation",
    "Policy": ".policies",
    "SamplerConfig": ".samplers",
    "ScrConfig": ".samplers",
    "SequenceStats": ".samplers",
    "Steer": ".steering",
    "Target": ".policies",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'mpg' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])

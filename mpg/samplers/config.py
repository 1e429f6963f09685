"""The samplers' knobs: what every drafting sampler shares (`SamplerConfig`) and SCR's own (`ScrConfig`).

Defaults are the ones the SPEC-oracle tests state TV bounds for. `generate()` and the server take every
knob as a flat keyword (chunk_size=4, window=32, ...); `SamplerConfig.from_flat` sorts them.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, field, fields, replace

__all__ = ["SamplerConfig", "ScrConfig"]


def _positive_int(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


@dataclass(frozen=True)
class ScrConfig:
    """SCR (the MPG paper's chunk-level rejection sampler): its threshold estimate, salvage and candidates."""

    window: int = 32  # sliding window of observed log-weights per prefix length
    margin: float = 0.0  # log M_t = window quantile + margin (nats)
    quantile: float = 1.0  # which quantile of the window is the bound (1.0: its maximum)
    pilot: int = 32  # drafts scored in one batch to seed an empty window
    salvage: bool = True  # keep the longest accepted prefix of a rejected chunk
    threshold: float | None = None  # fixed log-bound log M for every prefix length (exact mode)
    max_rejections: int = 16  # consecutive empty rounds before one exact token is emitted
    candidates: int = 1  # chunks drafted and validated together per round

    def validate(self) -> None:
        for name in ("window", "pilot", "max_rejections", "candidates"):
            _positive_int(name, getattr(self, name))
        m = self.margin
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m < 0:
            raise ValueError(f"margin must be a finite number >= 0, got {m!r}")
        q = self.quantile
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not (0 < q <= 1):
            raise ValueError(f"quantile must be a number in (0, 1], got {q!r}")
        if not isinstance(self.salvage, bool):
            raise ValueError(f"salvage must be True or False, got {self.salvage!r}")
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)):
            raise ValueError(f"threshold must be a finite log-bound, got {t!r}")


@dataclass(frozen=True)
class SamplerConfig:
    """Knobs of the drafting samplers (speculative, scr); `scr` holds SCR's own."""

    chunk_size: int = 4  # k: tokens drafted per round
    adaptive_chunk: bool = False  # per-sequence k: +2 after a fully kept draft, else -1
    max_chunk_size: int = 16  # adaptive_chunk: the largest k a sequence may grow to
    scr: ScrConfig = field(default_factory=ScrConfig)

    @classmethod
    def knob_names(cls) -> set[str]:
        """Every flat keyword `from_flat` takes."""
        return ({f.name for f in fields(cls)} - {"scr"}) | {f.name for f in fields(ScrConfig)}

    @classmethod
    def from_flat(cls, base: SamplerConfig | None = None, **knobs) -> SamplerConfig:
        """`base` (default: the defaults) with flat knobs on top: chunk_size=..., window=..., ..."""
        base = base or cls()
        unknown = set(knobs) - cls.knob_names()
        if unknown:
            raise TypeError(f"unknown sampler keyword(s): {', '.join(sorted(unknown))}")
        scr_names = {f.name for f in fields(ScrConfig)}
        scr = replace(base.scr, **{k: v for k, v in knobs.items() if k in scr_names})
        return replace(base, scr=scr, **{k: v for k, v in knobs.items() if k not in scr_names})

    def validate(self) -> None:
        for name in ("chunk_size", "max_chunk_size"):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.adaptive_chunk, bool):
            raise ValueError(f"adaptive_chunk must be True or False, got {self.adaptive_chunk!r}")
        if self.adaptive_chunk and self.max_chunk_size < self.chunk_size:
            raise ValueError(
                f"max_chunk_size ({self.max_chunk_size}) must be >= chunk_size ({self.chunk_size}), "
                "the length adaptive chunks start from"
            )
        self.scr.validate()

    def key(self) -> tuple:
        """Hashable identity (equal keys: the same knobs)."""
        return astuple(self)

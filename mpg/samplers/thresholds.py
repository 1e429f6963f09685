"""Bounds log M_t on the chunk importance weights, per prefix length t (SCR steps 3 and 6)."""

from __future__ import annotations

import math
from collections import deque

import torch

__all__ = ["FixedBound", "WindowBound", "window_quantile"]


class WindowBound:
    """log M_t = the `quantile` of the last `window` observed a_t (nearest rank; 1.0: their maximum) +
    margin. An empty window uses the current a_t.

    A quantile below 1 lowers the bound: more drafts pass (acceptance rises), and every a_t above the
    bound is a clip, which biases the kept chunks toward the proposal (SPEC section 3, step 6).
    """

    def __init__(self, window: int, margin: float, quantile: float = 1.0):
        self.window, self.margin, self.quantile = window, margin, quantile
        self.history: list[deque] = []

    def ready(self, length: int) -> bool:
        return len(self.history) >= length and all(self.history[t] for t in range(length))

    def log_bounds(self, a: torch.Tensor) -> torch.Tensor:
        """a: [T] current cumulative log-weights -> [T] bounds from past observations only."""
        out = a.clone()
        for t in range(a.numel()):
            if t < len(self.history) and self.history[t]:
                out[t] = window_quantile(self.history[t], self.quantile)
        return out + self.margin

    def observe(self, a: torch.Tensor) -> None:
        for t, v in enumerate(a.tolist()):
            while len(self.history) <= t:
                self.history.append(deque(maxlen=self.window))
            self.history[t].append(v)


def window_quantile(values, q: float) -> float:
    """Nearest-rank q-quantile of the window: the smallest value with at least q of the values at or
    below it (q = 1: the maximum)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered) - 1e-9), 1) - 1]  # 0.07 * 100 is 7.000000000000001


class FixedBound:
    """The user's log M for every prefix length: exact rejection sampling when it truly bounds W."""

    def __init__(self, log_m: float):
        self.log_m = float(log_m)

    def ready(self, length: int) -> bool:
        return True

    def log_bounds(self, a: torch.Tensor) -> torch.Tensor:
        return torch.full_like(a, self.log_m)

    def observe(self, a: torch.Tensor) -> None:
        pass

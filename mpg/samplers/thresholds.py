"""Bounds log M_t on the chunk importance weights, per prefix length t (SCR steps 3 and 6)."""

from __future__ import annotations

from collections import deque

import torch

__all__ = ["FixedBound", "WindowBound"]


class WindowBound:
    """log M_t = max of the last `window` observed a_t + margin. An empty window uses the current a_t."""

    def __init__(self, window: int, margin: float):
        self.window, self.margin = window, margin
        self.history: list[deque] = []

    def ready(self, length: int) -> bool:
        return len(self.history) >= length and all(self.history[t] for t in range(length))

    def log_bounds(self, a: torch.Tensor) -> torch.Tensor:
        """a: [T] current cumulative log-weights -> [T] bounds from past observations only."""
        out = a.clone()
        for t in range(a.numel()):
            if t < len(self.history) and self.history[t]:
                out[t] = max(self.history[t])
        return out + self.margin

    def observe(self, a: torch.Tensor) -> None:
        for t, v in enumerate(a.tolist()):
            while len(self.history) <= t:
                self.history.append(deque(maxlen=self.window))
            self.history[t].append(v)


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

"""The sampler interface: a sampler advances every sequence of a `Batch` by zero or more tokens a step.

A step scores the batch's drafts (if it drafts) and hands the numbers to its acceptance rule (pure
functions in `rules.py`); it returns what each sequence gained (`Advance`), and the batch applies it
(`Batch.advance`: responses, statistics, caches)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from .batch import Batch
from .state import Advance

__all__ = ["Sampler"]


class Sampler(ABC):
    name: str  # the name generate(sampler=...) takes
    drafts: bool  # whether the batch needs a drafter (a proposal to draw chunks from)

    @abstractmethod
    def step(self, batch: Batch) -> list[Advance]:
        """One round for every sequence of the batch: what each appends (in batch order)."""

    def run(self, batch: Batch) -> None:
        """One step, applied to the batch."""
        batch.advance(self.step(batch))

"""A batch of sequences being sampled together, and what holds their rows: the scorer (every policy of
every sequence's target) and, for the drafting samplers, the drafter.

Sequences of one batch may have different targets (personas) and settings (temperature, top-p, knobs):
each keeps its own target rows (`TargetBatch`), settings and random stream, and every step scores all
of them in one forward per model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..policy_table import TargetBatch, TargetRows
from ..scoring import MultiPolicyScorer
from .drafting import Drafter
from .state import Advance, Sequence

__all__ = ["Batch"]


@dataclass
class Batch:
    """The sequences generated together (same order everywhere): scorer rows, drafter rows, targets."""

    scorer: MultiPolicyScorer
    drafter: Drafter | None
    targets: list[TargetRows]  # per sequence, over its own policy order
    seqs: list[Sequence]
    _target: TargetBatch | None = field(default=None, repr=False)

    @property
    def ys(self) -> list[list[int]]:
        return [s.y for s in self.seqs]

    @property
    def target(self) -> TargetBatch:
        """Every sequence's target over the scorer's flat rows (rebuilt when sequences join or leave)."""
        if self._target is None:
            self._target = TargetBatch(
                self.scorer.seq_rows(),
                self.targets,
                [s.settings.temperature for s in self.seqs],
                [s.settings.top_p for s in self.seqs],
            )
        return self._target

    @property
    def alphas(self) -> list[float]:
        """Each sequence's plausibility constraint (the drafts are kept to it too)."""
        return [t.plausibility for t in self.targets]

    def score(self, chunks, support=None):
        """The scoring pass over the drafted chunks [B, n, K]: every row's logits [N, n, K+1, V]; a drafter
        that reads the target's features is handed them (`Drafter.observe`)."""
        if self.drafter is None or not self.drafter.wants_features:
            return self.scorer.score_rows(self.ys, chunks, support=support)
        logits, hidden = self.scorer.score_rows(self.ys, chunks, support=support, features=True)
        self.drafter.observe(self.ys, self.target.features(hidden))
        return logits

    def support(self):
        """`TargetBatch.support_rows`, when the scorer can return hidden states (else full logits)."""
        if not self.scorer.head_skippable:
            return None
        return self.target.support_rows(sum(g.rows for g in self.scorer.groups))

    def advance(self, steps: list[Advance]) -> None:
        """Append each sequence's tokens, record its counts, and keep in every cache what agrees."""
        for s, step in zip(self.seqs, steps):
            s.y.extend(step.tokens)
            s.stats.record(step)
            s.adapt_chunk(step)
        self.commit([step.winner for step in steps])

    def commit(self, winners: list[int] | None = None) -> None:
        """Keep, in every cache, what agrees with the responses (winners: the branch kept per sequence)."""
        lengths = [len(s.y) for s in self.seqs]
        self.scorer.commit(lengths, winners)
        if self.drafter is not None:
            self.drafter.commit(lengths, winners)

    def retain(self, keep: list[int]) -> None:
        """Keep only the sequences at positions `keep` (finished ones leave), in every cache too."""
        self.scorer.select(keep)
        if self.drafter is not None:
            self.drafter.select(keep)
        self.seqs = [self.seqs[i] for i in keep]
        self.targets = [self.targets[i] for i in keep]
        self._target = None

    def absorb(self, other: Batch) -> None:
        """Append `other`'s sequences (prefilled on their own) after this batch's."""
        self.scorer.absorb(other.scorer)
        if (self.drafter is None) != (other.drafter is None):
            raise ValueError("a drafting batch and a non-drafting one cannot be joined")
        if self.drafter is not None:
            self.drafter.absorb(other.drafter)
        self.seqs += other.seqs
        self.targets += other.targets
        self._target = None

    @property
    def ready(self) -> bool:
        """Whether every row's context is prefilled (the batch can step, or join a running one)."""
        return self.scorer.ready and (self.drafter is None or self.drafter.ready)

    def prefill(self, budget: int | None = None) -> int:
        """Feed at most `budget` more context tokens per row (None: all); returns the most columns fed."""
        fed = self.scorer.prefill(budget)
        if self.drafter is not None:
            fed = max(fed, self.drafter.prefill(budget))
        return fed

    def draft_lengths(self) -> list[int]:
        """Each sequence's draft length this round."""
        return [s.draft_length() for s in self.seqs]

"""A running batch: sequences join it between steps and leave it when they finish.

Sequences of any targets (personas) and settings share one running batch as long as they use the
same sampler: each step scores all of them in one forward per model. `Engine.generate` runs each
batch of its prompts as one running batch that nobody joins later; the server (`mpg.server`) keeps one
per sampler and adds requests as they arrive (continuous batching).

Joining: the engine prepares the newcomers' rows on their own (`Engine.prepare`: policy tables,
scorer rows, drafter rows, prefilled in pieces of at most a token budget per call, `Pending.prefill`),
then `join` appends them to the running caches. Leaving drops a sequence's rows (`Batch.retain`).

A sequence's output does not depend on which others share its batch: each draws every uniform from
its own random stream (a draft that is thrown away for it takes none), and the rows of a batched
forward differ only by the float rounding of batched matmuls. So a request served in a busy batch
gives the text `generate()` gives alone, with the same seed and settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .chat import Prompt
from .generation import BatchStats, find_stop
from .samplers import Batch, Sampler, Sequence

__all__ = ["Member", "Pending", "RunningBatch"]


@dataclass
class Member:
    """One sequence in a running batch: what its caller asked, and what it has been handed so far."""

    seq: Sequence
    prompt: Prompt
    stop: list[str] = field(default_factory=list)
    tag: object = None  # the caller's handle (the server's request)
    checked: int = 0  # response tokens already searched for stop strings and handed out
    started: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set by the caller (any thread); the member leaves at the next settle
    finish_reason: str | None = None  # "stop" (EOS or a stop string), "length", "cancelled"
    tokens: list[int] = field(default_factory=list)  # the final response ids (EOS kept, stop cut)
    text: str = ""  # the final response text


@dataclass
class Pending:
    """Newcomers whose rows are being prefilled (`Engine.prepare`): join them once `ready`."""

    batch: Batch
    members: list[Member]
    labels: list[list[str]]  # per sequence, its policies' labels (forward-pass statistics)
    draft_labels: list[str]

    @property
    def ready(self) -> bool:
        return self.batch.ready

    def prefill(self, budget: int | None = None) -> int:
        """Feed at most `budget` more context tokens per row (None: all); returns the columns fed."""
        return self.batch.prefill(budget)


class RunningBatch:
    """The sequences being generated together with one sampler; `join`, `step` and `settle` in any rhythm."""

    def __init__(self, sampler: Sampler, tokenizer):
        self.sampler, self.tokenizer = sampler, tokenizer
        self.batch: Batch | None = None
        self.members: list[Member] = []
        self.labels: list[list[str]] = []  # per sequence, its policies' labels
        self.draft_labels: list[str] = []  # per sequence, its proposal's label
        self.stats = BatchStats(prompts=[])  # passes of caches already dropped are added here
        self.scored: dict[str, None] = {}  # every policy label scored so far, first seen first

    def __len__(self) -> int:
        return len(self.members)

    def join(self, pending: Pending) -> list[Member]:
        """Add prepared sequences (their prefill done) to the batch; no pass for the others."""
        if not pending.ready:
            raise RuntimeError("these sequences are still being prefilled (Pending.prefill)")
        if self.batch is None:
            self.batch = pending.batch
        else:
            self.batch.absorb(pending.batch)
        self.members += pending.members
        self.labels += pending.labels
        self.draft_labels += pending.draft_labels
        self.scored.update(dict.fromkeys(label for ls in pending.labels for label in ls))
        return pending.members

    def step(self) -> None:
        """One round of the sampler for every sequence (each appends one token or more)."""
        self.sampler.run(self.batch)

    def settle(self) -> list[tuple[Member, list[int]]]:
        """Hand out what each sequence gained since the last call, up to a stop string: [(member, new
        token ids)]. Finished and cancelled members are in the list once more, with `finish_reason`
        set, and leave the batch (their rows are freed)."""
        events, keep = [], []
        tok = self.tokenizer
        for i, m in enumerate(self.members):
            s = m.seq
            if m.cancelled:
                m.finish_reason = "cancelled"
                events.append((m, []))
                continue
            eos = s.settings.eos
            n0 = m.checked
            stopped_at = find_stop(tok, s.y, n0, m.stop) if m.stop and len(s.y) > n0 else None
            end = stopped_at[0] if stopped_at else len(s.y)
            new, m.checked = s.y[n0:end], end
            ended_eos = bool(s.y) and s.y[-1] in eos
            if stopped_at or ended_eos or s.remaining <= 0:
                m.tokens = s.y[:end]
                body = m.tokens[:-1] if m.tokens and m.tokens[-1] in eos else m.tokens
                text = tok.decode(body, skip_special_tokens=True)
                m.text = text[: stopped_at[1]] if stopped_at else text
                m.finish_reason = "stop" if stopped_at or ended_eos else "length"
                s.stats.new_tokens, s.stats.wall_time_s = len(m.tokens), time.perf_counter() - m.started
            else:
                keep.append(i)
            if new or m.finish_reason:
                events.append((m, new))
        if len(keep) < len(self.members):
            if not keep:  # nobody left: drop the caches, keep their counts
                self._bank_passes()
                self.batch = None
            else:
                self.batch.retain(keep)
            self.members = [self.members[i] for i in keep]
            self.labels = [self.labels[i] for i in keep]
            self.draft_labels = [self.draft_labels[i] for i in keep]
        return events

    def _bank_passes(self) -> None:
        """Add the live caches' passes to `stats` (before the caches are dropped)."""
        live = self.batch_stats()
        self.stats.forward_passes, self.stats.model_calls = live.forward_passes, live.model_calls

    def _passes(self) -> dict:
        """Forward passes per policy label (a pass of a group counts once for each policy it holds)."""
        out, scorer, drafter = {}, self.batch.scorer, self.batch.drafter
        for gi, g in enumerate(scorer.groups):
            held = dict.fromkeys(
                self.labels[b][p]
                for b, slots in enumerate(scorer.slots)
                for p, (gj, _) in enumerate(slots)
                if gj == gi
            )
            for label in held:
                out[label] = out.get(label, 0) + g.forward_passes
        if drafter is not None:
            for label in dict.fromkeys(self.draft_labels):
                out["proposal:" + label] = drafter.forward_passes
        return out

    def batch_stats(self) -> BatchStats:
        """Every forward pass this batch has run so far, per policy label and in all."""
        out = BatchStats(
            prompts=[], forward_passes=dict(self.stats.forward_passes), model_calls=self.stats.model_calls
        )
        if self.batch is not None:
            for label, n in self._passes().items():
                out.forward_passes[label] = out.forward_passes.get(label, 0) + n
            out.model_calls += self.batch.scorer.forward_passes + (
                self.batch.drafter.forward_passes if self.batch.drafter is not None else 0
            )
        return out

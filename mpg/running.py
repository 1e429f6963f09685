"""A running batch: sequences of one target join it between steps and leave it when they finish.

`Engine.generate` runs each batch of its prompts as one running batch that nobody joins later; the
server (`mpg.server`) keeps one per target and batch-level settings, and adds requests as they arrive
(continuous batching). Joining prefills the newcomers' contexts in one pass of their own and appends
their rows to the running caches (`MultiPolicyScorer.absorb`); leaving drops a sequence's rows
(`Batch.retain`).

A sequence's output does not depend on which others share its batch: each draws every uniform from
its own random stream (a draft that is thrown away for it takes none), and the rows of a batched
forward differ only by the float rounding of batched matmuls. So a request served in a busy batch
gives the text `generate()` gives alone, with the same seed and settings.
"""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass, field

from .generation import BatchStats, find_stop
from .policies import Target
from .policy_table import PolicyTable
from .samplers import SAMPLERS, SamplerConfig
from .samplers.common import Batch, Sequence

__all__ = ["BatchSettings", "Member", "RunningBatch"]


@dataclass(frozen=True)
class BatchSettings:
    """What every sequence of one batch shares besides the target (the rest is per sequence)."""

    sampler: str
    temperature: float
    top_p: float
    sampler_config: SamplerConfig
    eos: frozenset

    def key(self) -> tuple:
        """Hashable identity: sequences with equal keys (and equal targets) may share a batch."""
        return (self.sampler, self.temperature, self.top_p, astuple(self.sampler_config), self.eos)


@dataclass
class Member:
    """One sequence in a running batch: what its caller asked, and what it has been handed so far."""

    seq: Sequence
    prompt: str
    stop: list[str] = field(default_factory=list)
    tag: object = None  # the caller's handle (the server's request)
    checked: int = 0  # response tokens already searched for stop strings and handed out
    started: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set by the caller (any thread); the member leaves at the next settle
    finish_reason: str | None = None  # "stop" (EOS or a stop string), "length", "cancelled"
    tokens: list[int] = field(default_factory=list)  # the final response ids (EOS kept, stop cut)
    text: str = ""  # the final response text


class RunningBatch:
    """The sequences of one target being generated together; `join`, `step` and `settle` in any rhythm."""

    def __init__(self, engine, target: Target, settings: BatchSettings):
        self.engine, self.target, self.settings = engine, target, settings
        self.batch: Batch | None = None
        self.table: PolicyTable | None = None
        self.members: list[Member] = []
        self.stats = BatchStats(prompts=[])  # passes of caches already dropped are added here
        self.labels: list[str] = []

    def __len__(self) -> int:
        return len(self.members)

    def join(
        self, prompts: list[str], seqs: list[Sequence], stops: list[list[str]], tags=None
    ) -> list[Member]:
        """Add sequences (one per prompt) to the batch: one prefill pass for them, none for the others.
        Raises ValueError if their policy table differs from the running one's (give them their own batch)."""
        table = self.engine.policy_table(self.target, prompts)
        scorer = self.engine.build_scorer(table)
        drafter = self._drafter(table, prompts)
        if self.batch is None:
            s = self.settings
            self.batch = Batch(
                scorer, drafter, table.rows, s.sampler_config, s.temperature, s.top_p, s.eos, list(seqs)
            )
            self.table, self.labels = table, table.labels()
        else:
            if table.policies != self.table.policies or table.row_of != self.table.row_of:
                raise ValueError("these prompts render the target's policies differently; use another batch")
            self.batch.scorer.absorb(scorer)
            if drafter is not None:
                self.batch.drafter.absorb(drafter, len(self.batch.seqs))
            self.batch.seqs.extend(seqs)
        tags = tags if tags is not None else [None] * len(seqs)
        members = [Member(s, p, list(st), t) for s, p, st, t in zip(seqs, prompts, stops, tags)]
        self.members.extend(members)
        return members

    def _drafter(self, table: PolicyTable, prompts: list[str]):
        """The proposal's row per sequence (None for fused). The default proposal is the anchor, whose
        contexts the table has rendered already."""
        if self.settings.sampler == "fused":
            return None
        q = self.target.draft_policy
        rendered = table.index()
        contexts = (
            [table.contexts[rendered[q]]]
            if q in rendered
            else PolicyTable.for_policies(self.engine, [q], prompts).contexts
        )
        return self.engine.policy_group(q.model, [q], contexts)

    def step(self) -> None:
        """One round of the sampler for every sequence (each appends one token or more)."""
        SAMPLERS[self.settings.sampler](self.batch)

    def settle(self) -> list[tuple[Member, list[int]]]:
        """Hand out what each sequence gained since the last call, up to a stop string: [(member, new
        token ids)]. Finished and cancelled members are in the list once more, with `finish_reason`
        set, and leave the batch (their rows are freed)."""
        events, keep = [], []
        eos, tok = self.settings.eos, self.engine.tokenizer
        for i, m in enumerate(self.members):
            s = m.seq
            if m.cancelled:
                m.finish_reason = "cancelled"
                events.append((m, []))
                continue
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
            self.members = [self.members[i] for i in keep]
            if keep:
                self.batch.retain(keep)
            else:  # nobody left: drop the caches, keep their counts
                self._bank_passes()
                self.batch = self.table = None
        return events

    def _bank_passes(self) -> None:
        """Add the live caches' passes to `stats` (before the caches are dropped)."""
        live = self.batch_stats()
        self.stats.forward_passes, self.stats.model_calls = live.forward_passes, live.model_calls

    def _passes(self) -> dict:
        """Forward passes per policy label (a pass of a group counts for each of its policies)."""
        out, scorer, drafter = {}, self.batch.scorer, self.batch.drafter
        for gi, g in enumerate(scorer.groups):
            for i, (gj, _) in enumerate(scorer.index):
                if gj == gi:
                    out[self.labels[i]] = out.get(self.labels[i], 0) + g.forward_passes
        if drafter is not None:
            out["proposal:" + self.target.draft_policy.label()] = drafter.forward_passes
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

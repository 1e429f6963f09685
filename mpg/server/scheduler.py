"""Continuous batching: one worker thread owns the engine and steps the running batches.

Requests wait in a bounded queue (full: the caller answers 429 at once). Between steps the worker
admits waiting requests while the running and prefilling sequences stay within `max_batch`. Every
request of one sampler joins the same running batch, whatever its persona, temperature, top-p or
knobs: each step is one forward per model over all their rows. Each choice is one sequence with its
own random stream (seed * 1_000_003 + choice, as `generate()` numbers prompts), so the text is the one
offline `generate()` gives. A newcomer's context is prefilled in pieces of at most `prefill_chunk`
tokens per row, one piece per loop between the running batches' steps, so running sequences keep
streaming while a wave joins; once prefilled it joins its sampler's batch. Sequences leave when done
or cancelled, and their rows are freed at once.

Only this thread touches the models and caches (adapters are loaded before it starts); request
handlers on the event loop talk to it through `Job`: `submit`, `cancel`, and events pushed back with
`loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import threading
import time
import traceback
from dataclasses import dataclass, field

import torch

from ..proposals import resolve_proposal
from ..running import Pending, RunningBatch
from ..samplers import SAMPLERS, Sequence, prompt_rng
from .protocol import JobSpec

__all__ = ["Job", "Scheduler"]


@dataclass
class Job:
    """One request in flight: its spec, its sequences once admitted, and the queue its events go to.

    Events: ("tokens", choice, new ids), ("done", choice, Member), ("error", status, message).
    """

    spec: JobSpec
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    members: list = field(default_factory=list)  # its choices' mpg.running.Member, once admitted
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    target: object = None  # the spec's target with its proposal built (the worker sets it)

    def push(self, *event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        """Called from the event loop when the client is gone: the worker frees the rows at its next step."""
        self.cancelled = True
        for m in self.members:
            m.cancelled = True


class Scheduler:
    def __init__(
        self,
        engine,
        max_batch: int,
        max_queue: int,
        metrics=None,
        prefill_chunk: int = 256,
        max_merged: int = 4,
        threads=None,
    ):
        """prefill_chunk: context tokens per row a newcomer's prefill feeds per loop; max_merged: summed
        adapters (proposal="merged") kept loaded, least recently used unloaded first; threads: a
        `mpg.threads.ThreadPolicy`, re-applied between steps (None: torch's own setting)."""
        self.engine, self.max_batch, self.max_queue, self.metrics = engine, max_batch, max_queue, metrics
        self.prefill_chunk, self.max_merged, self.threads = prefill_chunk, max_merged, threads
        self.waiting: collections.deque[Job] = collections.deque()
        # (sampler, drafter kind) -> its running batch: a head drafter and a policy drafter keep different
        # state, so sequences drafted by each run in batches of their own
        self.batches: dict[tuple[str, str], RunningBatch] = {}
        self.prefilling: list[tuple[tuple[str, str], list[Job], Pending]] = []  # newcomers being prefilled
        self.cv = threading.Condition()
        self.admitting = True  # False once shutdown begins: new requests get 503
        self.stopping = False
        self.running = 0  # sequences running or prefilling, as of the worker's last loop (read anywhere)
        self._trimmed = 0.0
        self.thread = threading.Thread(target=self._run, name="mpg-scheduler", daemon=True)

    # ---- the event loop's side -----------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> str | None:
        """Queue a job. Returns None, or why it was refused: "full" (429) or "closed" (503)."""
        with self.cv:
            if not self.admitting:
                return "closed"
            if len(self.waiting) >= self.max_queue:
                return "full"
            self.waiting.append(job)
            self.cv.notify()
        self._gauges()
        return None

    def stop_admitting(self) -> None:
        with self.cv:
            self.admitting = False

    def close(self, timeout: float) -> None:
        """Stop the worker: in-flight work gets `timeout` seconds to finish, then is cancelled (503)."""
        self.stop_admitting()
        deadline = time.monotonic() + timeout
        while sum(self.load()) and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.cv:
            self.stopping = True
            self.cv.notify()
        self.thread.join(timeout=max(5.0, timeout))

    def load(self) -> tuple[int, int]:
        """(running sequences, waiting requests), safe to read from any thread."""
        return self.running, len(self.waiting)

    def _count(self) -> int:  # the worker's own, exact count
        self.running = sum(len(rb) for rb in self.batches.values()) + sum(
            len(p.members) for _, _, p in self.prefilling
        )
        return self.running

    # ---- the worker ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.stopping and not self.waiting and not self._count():
                    self.cv.wait(timeout=0.5)
                if self.stopping:
                    break
                admit = self._take_admissible()
            # jobs admitted together share one prefill per sampler (and per proposal "head" or not)
            by_sampler: dict[tuple[str, bool], list[Job]] = {}
            for job in admit:
                key = (job.spec.settings.sampler, job.spec.target.proposal == "head")
                by_sampler.setdefault(key, []).append(job)
            for (sampler, _), jobs in by_sampler.items():
                self._prepare(sampler, jobs)
            self._prefill()
            if self.threads is not None:
                self.threads.adapt()
            for key, rb in list(self.batches.items()):
                self._advance(rb)
                if not len(rb):
                    del self.batches[key]
                    self._release_memory()
            self._count()
            self._gauges()
        self._cancel_everything()

    def _take_admissible(self) -> list[Job]:
        """Waiting jobs, first come first served, while their sequences fit in max_batch (under the lock)."""
        out, running = [], self._count()
        while self.waiting:
            job = self.waiting[0]
            if job.cancelled:
                self.waiting.popleft()
                continue
            if running + len(job.spec.prompts) > self.max_batch:
                break
            running += len(job.spec.prompts)
            out.append(self.waiting.popleft())
        return out

    def _in_use(self) -> set[str]:
        """The adapters of running and prefilling sequences' proposals (a summed adapter in use stays)."""
        jobs = [m.tag[0] for rb in self.batches.values() for m in rb.members]
        jobs += [job for _, waiting, _ in self.prefilling for job in waiting]
        return {job.target.draft_policy.adapter for job in jobs if job.target is not None}

    def _prepare(self, sampler: str, jobs: list[Job]) -> None:
        """Build the rows of jobs of one sampler (their prefill is left to `_prefill`, in pieces). A
        proposal named "merged" gets its summed adapter here, between steps, from a bounded cache."""
        requests = []
        try:
            for job in jobs:
                t = job.spec.target
                job.target = (
                    resolve_proposal(self.engine, t, t.proposal) if isinstance(t.proposal, str) else t
                )
                for i, prompt in enumerate(job.spec.prompts):
                    seq = Sequence(job.spec.max_tokens, prompt_rng(job.spec.seed, i), job.spec.settings)
                    requests.append((job.target, prompt, seq, job.spec.stop, (job, i)))
            keep = self._in_use() | {job.target.draft_policy.adapter for job in jobs}
            self.engine.registry.trim_merged(self.max_merged, keep=keep)
            pending = self.engine.prepare(requests, prefill=False)
        except Exception as e:  # noqa: BLE001 -- one request's failure must not stop the server
            traceback.print_exc()
            for job in jobs:
                job.push("error", 500, f"could not start generation: {type(e).__name__}: {e}")
            return
        for m in pending.members:
            job = m.tag[0]
            job.members.append(m)
            if job.cancelled:
                m.cancelled = True
        drafter = pending.batch.drafter
        self.prefilling.append(((sampler, type(drafter).__name__ if drafter else ""), jobs, pending))

    def _prefill(self) -> None:
        """One piece of every newcomer's prefill; those done join their sampler's running batch."""
        still = []
        for key, jobs, pending in self.prefilling:
            try:
                pending.prefill(self.prefill_chunk)
                if pending.ready:
                    if key not in self.batches:
                        self.batches[key] = RunningBatch(SAMPLERS[key[0]], self.engine.tokenizer)
                    self.batches[key].join(pending)
                else:
                    still.append((key, jobs, pending))
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                for job in jobs:
                    job.push("error", 500, f"could not start generation: {type(e).__name__}: {e}")
        self.prefilling = still

    def _advance(self, rb: RunningBatch) -> None:
        """Hand out what the batch's sequences gained, then step it once. A failing step fails only
        this batch's requests (500); the other batches and the server go on."""
        try:
            for m, new in rb.settle():
                job, choice = m.tag
                if m.finish_reason == "cancelled":
                    continue
                if new:
                    job.push("tokens", choice, new)
                if m.finish_reason:
                    job.push("done", choice, m)
            if len(rb):
                rb.step()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            for m in rb.members:
                m.tag[0].push("error", 500, f"generation failed: {type(e).__name__}: {e}")
            rb.members.clear()
            rb.batch = None

    def _release_memory(self) -> None:
        """Return freed heap to the system when a batch ends (at most every 5 s): glibc keeps the
        prefill's transient buffers otherwise, and the resident size creeps up wave after wave."""
        now = time.monotonic()
        if now - self._trimmed < 5:
            return
        self._trimmed = now
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: nothing to do
            pass

    def _cancel_everything(self) -> None:
        with self.cv:
            jobs = list(self.waiting)
            self.waiting.clear()
        for rb in self.batches.values():
            jobs += [m.tag[0] for m in rb.members]
        for _, waiting, _ in self.prefilling:
            jobs += waiting
        self.batches.clear()
        self.prefilling = []
        self.running = 0
        for job in dict.fromkeys(jobs):
            job.push("error", 503, "the server is shutting down; the request was cancelled")

    def _gauges(self) -> None:
        if self.metrics is not None:
            running, waiting = self.load()
            self.metrics.running.set(running)
            self.metrics.queue_depth.set(waiting)

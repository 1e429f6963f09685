"""Continuous batching: one worker thread owns the engine and steps every running batch in turn.

Requests wait in a bounded queue (full: the caller answers 429 at once). Between steps the worker
admits waiting requests while the running sequences stay within `max_batch`: a request joins the
running batch of its target and batch-level settings (temperature, top-p, sampler knobs), or opens
one; each of its choices is one sequence with its own random stream (seed * 1_000_003 + choice, as
`generate()` numbers prompts), so the text is the one offline `generate()` gives. Each loop steps
every running batch once, so requests of different personas progress side by side; sequences leave
when done or cancelled, and their rows are freed at once.

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

from ..running import Member, RunningBatch
from ..samplers.common import Sequence, prompt_rng
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
    members: list[Member] = field(default_factory=list)
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False

    def push(self, *event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        """Called from the event loop when the client is gone: the worker frees the rows at its next step."""
        self.cancelled = True
        for m in self.members:
            m.cancelled = True


class Scheduler:
    def __init__(self, engine, max_batch: int, max_queue: int, metrics=None):
        self.engine, self.max_batch, self.max_queue, self.metrics = engine, max_batch, max_queue, metrics
        self.waiting: collections.deque[Job] = collections.deque()
        self.batches: dict[tuple, list[RunningBatch]] = {}
        self.cv = threading.Condition()
        self.admitting = True  # False once shutdown begins: new requests get 503
        self.stopping = False
        self.running = 0  # sequences in running batches, as of the worker's last loop (read anywhere)
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
        self.running = sum(len(rb) for runs in self.batches.values() for rb in runs)
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
            groups: dict[tuple, list[Job]] = {}  # jobs admitted together share one prefill per target
            for job in admit:
                groups.setdefault((job.spec.target, job.spec.settings.key()), []).append(job)
            for key, jobs in groups.items():
                self._admit(key, jobs)
            for key, runs in list(self.batches.items()):
                for rb in list(runs):
                    self._advance(rb)
                    if not len(rb):
                        runs.remove(rb)
                        self._release_memory()
                if not runs:
                    del self.batches[key]
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

    def _admit(self, key: tuple, jobs: list[Job]) -> None:
        """Join jobs of one target and settings to a running batch (or a new one) in one prefill."""
        spec = jobs[0].spec
        prompts, seqs, stops, tags = [], [], [], []
        for job in jobs:
            for i, prompt in enumerate(job.spec.prompts):
                prompts.append(prompt)
                seqs.append(Sequence(job.spec.max_tokens, prompt_rng(job.spec.seed, i)))
                stops.append(job.spec.stop)
                tags.append((job, i))
        runs = self.batches.setdefault(key, [])
        try:
            for rb in runs:
                try:
                    members = rb.join(prompts, seqs, stops, tags)
                    break
                except ValueError:  # the prompts render the policies differently: another batch
                    continue
            else:
                rb = RunningBatch(self.engine, spec.target, spec.settings)
                members = rb.join(prompts, seqs, stops, tags)
                runs.append(rb)
        except Exception as e:  # noqa: BLE001 -- one request's failure must not stop the server
            traceback.print_exc()
            for job in jobs:
                job.push("error", 500, f"could not start generation: {type(e).__name__}: {e}")
            if not runs:
                del self.batches[key]
            return
        for m in members:
            job = m.tag[0]
            job.members.append(m)
            if job.cancelled:
                m.cancelled = True

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
        for runs in self.batches.values():
            for rb in runs:
                jobs += [m.tag[0] for m in rb.members]
        self.batches.clear()
        self.running = 0
        for job in dict.fromkeys(jobs):
            job.push("error", 503, "the server is shutting down; the request was cancelled")

    def _gauges(self) -> None:
        if self.metrics is not None:
            running, waiting = self.load()
            self.metrics.running.set(running)
            self.metrics.queue_depth.set(waiting)

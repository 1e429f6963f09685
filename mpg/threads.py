"""How many intra-op threads torch uses, chosen for a machine that may be busy with other work.

torch's CPU kernels split each operation over its intra-op threads and wait for the slowest. When
another process holds a core, the thread that shares it runs at a fraction of its speed, and every
operation waits for it (spinning OpenMP workers make that worse): a busy machine slows decoding far
more than in proportion to the cores it lost. So by default mpg uses only the cores the rest of the
machine leaves idle, measured from /proc/stat, and re-checks between steps (`ThreadPolicy.adapt`);
OpenMP's waiting workers sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE, set before torch starts
its thread pool, when the user has not set it). `--threads N` fixes the count instead.
"""

from __future__ import annotations

import os
import time

__all__ = ["ThreadPolicy", "available_cores", "set_wait_policy"]


def set_wait_policy() -> None:
    """OpenMP workers sleep at barriers instead of spinning (unless the user chose otherwise). Only has an
    effect before torch's thread pool starts, so entry points call it first."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat (None where absent)."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
    except OSError:
        return None
    values = [float(v) for v in parts[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _own_cpu() -> float:
    """Seconds of CPU this process has used (all threads)."""
    t = os.times()
    return t.user + t.system


class ThreadPolicy:
    """threads: an int (fixed) or "auto" (the cores other processes leave idle, re-measured every
    `interval` seconds by `adapt`)."""

    def __init__(self, threads: int | str = "auto", interval: float = 2.0):
        if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be 'auto' or an integer >= 1, got {threads!r}")
        self.threads, self.interval = threads, interval
        self.cores = available_cores()
        self._last = None  # (time, machine busy, machine total, own cpu)
        self.current = None

    def apply(self) -> int:
        """Set torch's intra-op threads now (auto: from the load since the last call, or all cores)."""
        import torch

        n = self.threads if self.threads != "auto" else self._measure()
        if n != self.current:
            torch.set_num_threads(n)
            self.current = n
        return n

    def adapt(self) -> int:
        """`apply` at most every `interval` seconds (cheap to call between steps)."""
        if self.threads != "auto":
            return self.apply() if self.current is None else self.current
        if self._last is not None and time.monotonic() - self._last[0] < self.interval:
            return self.current
        return self.apply()

    def _measure(self) -> int:
        """The cores left idle by other processes since the last measurement (all cores the first time)."""
        now, times, own = time.monotonic(), _cpu_times(), _own_cpu()
        last, self._last = self._last, (now, *(times or (0.0, 0.0)), own)
        if last is None or times is None:
            return self.cores
        busy, total = times[0] - last[1], times[1] - last[2]
        if total <= 0:
            return self.current or self.cores
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        machine_cores = os.cpu_count() or self.cores
        wall = total / machine_cores / ticks  # seconds the interval lasted
        if wall <= 0:
            return self.current or self.cores
        others = max(0.0, busy / ticks - (own - last[3])) / wall  # cores other processes kept busy
        return max(1, min(self.cores, round(self.cores - others)))

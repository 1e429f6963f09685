"""Data-parallel evaluation: each process of an `accelerate launch` run takes its share of the work.

Why accelerate: it is what lm-evaluation-harness itself uses for data-parallel runs, and it sets up
torch.distributed (gloo on CPUs, NCCL on GPUs) from the launcher's environment. A plain `python`
run is one process holding every share, so the same code runs both ways.

How work is split: a caller lists its units of work in the order a one-process run does them and
takes `shard.mine(units)`: rank r gets units r, r + W, r + 2W, ... (W processes). Units are chosen
so that each one is computed exactly as in a one-process run (a generation batch keeps its prompts and
seeds together), so gathering the results and putting them back in order gives the one-process result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Shard", "current_shard"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: rank in [0, world_size)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, units: list[T]) -> list[tuple[int, T]]:
        """(index, unit) pairs of this process's share, in order."""
        return [(i, u) for i, u in enumerate(units) if i % self.world_size == self.rank]

    def gather(self, results: list[tuple[int, T]]) -> list[T]:
        """Every process's (index, result) pairs, in index order, on every process (one process: as is)."""
        if self.world_size == 1:
            return [r for _, r in sorted(results, key=lambda x: x[0])]
        import torch.distributed as dist

        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, results)
        return [r for _, r in sorted((x for part in parts for x in part), key=lambda x: x[0])]

    def map(self, fn, units: list[T]) -> list:
        """[fn(unit) for unit in units], each process computing its share; every process gets all results."""
        return self.gather([(i, fn(u)) for i, u in self.mine(units)])

    def main_first(self, make):
        """make() on the main process first (it may train or extract, then write a cache), then on the
        others (they read that cache): no two processes write one file."""
        if self.is_main:
            value = make()
            self.barrier()
            return value
        self.barrier()
        return make()

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def current_shard() -> Shard:
    """The shard of this process: from accelerate's state under `accelerate launch` (WORLD_SIZE > 1),
    else the single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    # initialises torch.distributed from the launcher's environment; without a GPU, accelerate needs
    # cpu=True to use gloo across the processes (otherwise each would believe it is alone)
    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes)

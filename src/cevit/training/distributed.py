"""Data-parallel training on several processes (torch.distributed): one process per GPU (NCCL), or several CPU
processes (gloo), launched by ``torchrun`` (or ``cevit train --nproc N``, which runs torchrun).

* :class:`DistributedContext` — this process's rank, the world size and the backend, read from the environment
  torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); :meth:`~DistributedContext.init` starts the process
  group (gloo on CPU, NCCL on CUDA, each process on GPU ``LOCAL_RANK``).
* :class:`RankBatchSampler` — this rank's share of every *global* batch of the run's batch sampler: items
  ``rank, rank + world, ...`` of the batch. Every step sees exactly the global batch the single-process run
  sees (DistributedDataParallel averages the gradients of the equal shares, which is the gradient of the
  global batch's mean loss), and a resumed run starts at the saved step as before. Hand-written instead of
  :class:`torch.utils.data.DistributedSampler` for that reason: DistributedSampler shards a whole epoch per
  rank (another permutation than the single-process run's batches, so the 2-process loss curve could not be
  compared step by step with the 1-process one) and cannot start in the middle of an epoch (exact resume).
* :func:`mean_over_ranks` — a float averaged over the ranks (the logged training loss is the global batch's).

What differs from one process: BatchNorm layers see each rank's share of the batch (batch statistics over
``batch_size / world`` items) unless they are synchronised; on CUDA the trainer converts them to
:class:`torch.nn.SyncBatchNorm` (global batch statistics), which gloo on CPU does not support.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from cevit.errors import ConfigError

__all__ = ["DistributedContext", "RankBatchSampler", "mean_over_ranks"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class DistributedContext:
    """Where this process stands in a data-parallel run (``world_size`` 1: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints, state and curves."""
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DistributedContext:
        """From torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (absent: a single process)."""
        env = os.environ if env is None else env
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise ConfigError(f"inconsistent distributed environment: RANK={rank}, WORLD_SIZE={world}")
        return cls(rank=rank, world_size=world, local_rank=local)

    def device(self, requested: torch.device) -> torch.device:
        """The device of this rank: ``cuda:LOCAL_RANK`` when training on CUDA, else ``requested``."""
        if self.enabled and requested.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"process {self.rank} needs GPU {self.local_rank}, but this machine has "
                                  f"{torch.cuda.device_count()}: start at most one process per GPU")  # fmt: skip
            return torch.device("cuda", self.local_rank)
        return requested

    def init(self, device: torch.device, *, timeout_s: float = 1800.0) -> None:
        """Start the process group (once): NCCL for CUDA, gloo otherwise. Needs ``MASTER_ADDR`` / ``MASTER_PORT``
        (torchrun sets them)."""
        if not self.enabled or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
        dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size,
                                timeout=dt.timedelta(seconds=timeout_s))  # fmt: skip

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.barrier()


class RankBatchSampler:
    """Items ``rank::world`` of every batch of ``batches`` (see the module docstring); every batch must have a
    multiple of ``world`` items, so that the shares are equal."""

    def __init__(self, batches: Iterable[list[T]], *, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[T]]:
        for batch in self.batches:
            if len(batch) % self.world_size:
                raise ConfigError(f"a batch of {len(batch)} items cannot be split equally between "
                                  f"{self.world_size} processes")  # fmt: skip
            yield batch[self.rank :: self.world_size]


def mean_over_ranks(value: float, context: DistributedContext, device: torch.device) -> float:
    """``value`` averaged over every rank (``value`` itself in a single process)."""
    if not context.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / context.world_size

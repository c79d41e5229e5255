"""Device choice and multi-process (DistributedDataParallel) plumbing for training.

A run started by ``torchrun --nproc_per_node=N mtan-train ...`` finds RANK,
WORLD_SIZE and LOCAL_RANK in its environment and joins a process group: NCCL
when it trains on CUDA, gloo on CPU. Without those variables everything here
is a no-op, so the same code path serves one process and many.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from mtan_ros.errors import DeviceError  # noqa: F401 (re-exported)

__all__ = ["DeviceError", "DistContext", "resolve_device", "setup_distributed", "ShardSampler", "epoch_seed"]


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's CUDA device when one is usable, else the CPU; ``cuda`` / ``cuda:N`` / ``cpu``."""
    preference = (preference or "auto").strip().lower()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    if preference == "cpu":
        return torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {preference!r} requested but CUDA is not available to this PyTorch "
                              f"(build {torch.__version__}); use --device cpu or --device auto")
        if preference == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        try:
            index = int(preference.split(":", 1)[1])
        except (IndexError, ValueError):
            raise DeviceError(f"device {preference!r} is not auto, cpu, cuda or cuda:N") from None
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {preference!r} requested but only {torch.cuda.device_count()} CUDA "
                              "device(s) are visible")
        return torch.device("cuda", index)
    raise DeviceError(f"device {preference!r} is not auto, cpu, cuda or cuda:N")


@dataclass
class DistContext:
    """Where this process stands in the job: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every process when it is True on at least one (e.g. 'the time budget ran out')."""
        if not self.distributed:
            return bool(flag)
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.all_reduce_sum(value).item() > 0)

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every process the main process's buffers (BatchNorm running statistics).

        During training each process updates its own running statistics from its
        own batches; evaluating and saving must use one set, the one rank 0 saves.
        """
        if self.distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def barrier(self) -> None:
        if self.distributed:
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def close(self, *, synchronise: bool = True) -> None:
        """Leave the process group; call it after releasing every DistributedDataParallel wrapper.

        `synchronise`: first wait at a barrier until every process is done
        communicating, so that none closes its connections under a peer's
        collective (pass False when leaving on an error: a peer may never
        arrive). Then destroy the group and collect garbage, so that gloo's
        worker threads are joined now: a worker still releasing a finished
        collective's tensors when the interpreter shuts down aborts the
        process ("terminate called without an active exception").
        """
        if self.owns_group:
            if dist.is_initialized():
                if synchronise and self.distributed:
                    self.barrier()
                dist.destroy_process_group()
                gc.collect()  # reference cycles may still hold the group's backend and its threads
            self.owns_group = False


def setup_distributed(device_preference: str = "auto") -> DistContext:
    """Join the torchrun process group when launched by torchrun; otherwise a one-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world_size <= 1:
        return DistContext(device=device)
    owns = False
    if not dist.is_initialized():
        # torch.distributed.nn binds the current default group into its functions' default arguments when
        # first imported, which DistributedDataParallel does; imported after init_process_group it would
        # keep the group (and gloo's threads) alive until interpreter shutdown, past close().
        import torch.distributed.nn  # noqa: F401

        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30), **kwargs)
        owns = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       device=device, owns_group=owns)


class ShardSampler(torch.utils.data.Sampler):
    """Every world_size-th index from rank: each item exactly once over all processes, no padding.

    For evaluation (DistributedSampler pads by repeating items, which would count
    them twice in the metrics).
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed that depends only on (seed, epoch, rank), so a resumed epoch draws what it drew before."""
    return (int(seed) * 1_000_003 + int(epoch) * 10_007 + int(rank) * 101 + 12345) % (2 ** 63 - 1)

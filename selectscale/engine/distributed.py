"""torchrun-compatible process-group setup, device choice and sum reductions.

``torchrun --nproc_per_node=N train.py ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them the
run is a single process. NCCL on CUDA, gloo on CPU. A collective that waits longer than
``trainer.dist_timeout_s`` raises instead of hanging, so a dead rank stops the job.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def choose_device(requested: str, local_rank: int) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"trainer.device={requested!r} is invalid: CUDA is not available here; use cpu or auto")
        return torch.device(requested if ":" in requested else f"cuda:{local_rank}")
    return torch.device(requested)


def setup(requested_device: str, timeout_s: int) -> DistContext:
    """Join the process group when launched by torchrun; pick this rank's device."""
    world_size = world_size_from_env()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank, world_size, local_rank, device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is True on any (e.g. a preemption signal seen by one rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    return bool(sum_across_ranks(torch.tensor([float(flag)], device=device)).item() > 0)


def sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks (a new tensor); ``tensor`` itself when torch.distributed is not
    initialised. Reduce sums (e.g. correct predictions and sample count), then divide."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


__all__ = ["DistContext", "broadcast_flag", "broadcast_object", "setup", "sum_across_ranks", "teardown"]


def broadcast_object(value, src: int = 0):
    """``value`` from rank ``src`` on every rank (e.g. rank 0's decision about the run directory)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]

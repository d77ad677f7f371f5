"""torchrun-compatible process-group setup, device choice and sum reductions.

``torchrun --nproc_per_node=N train.py ...`` sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address
MASTER_ADDR, MASTER_PORT). A process that Slurm's srun started as one of several tasks of a job step (``srun -n 2
python train.py``, the submitit launcher's ``tasks_per_node=2``) has Slurm's variables instead; they are turned
into torchrun's (:func:`slurm_launch`), so the tasks form ONE run. Without either the run is a single process.
NCCL on CUDA, gloo on CPU. A collective that waits longer than ``trainer.dist_timeout_s`` raises instead of
hanging, so a dead rank stops the job.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from selectscale.errors import ConfigError

log = logging.getLogger("selectscale")
# A job's rendezvous port, when Slurm starts the ranks and MASTER_PORT is unset: one per job id, below Linux's
# ephemeral ports (32768-60999), so two multi-task jobs sharing a node do not collide.
SLURM_PORT_BASE, SLURM_PORT_SPAN = 15000, 15000

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


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (its hostlist syntax): ``gpu[003-005,010],cpu1`` -> ``gpu003``,
    ``rack1-[3-4]`` -> ``rack1-3``, ``vm`` -> ``vm``."""
    depth, end = 0, len(nodelist)
    for index, char in enumerate(nodelist):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            end = index
            break
    host = re.sub(r"\[([^\]]*)\]", lambda match: re.split(r"[,-]", match.group(1))[0], nodelist[:end].strip())
    if not host:
        raise ConfigError(f"Slurm's node list {nodelist!r} names no host; set MASTER_ADDR to the first task's host")
    return host


def _slurm_int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise ConfigError(f"{name}={env.get(name)!r} is not a number: this process was started by Slurm's srun "
                          "(SLURM_STEP_ID is set) but its task variables are incomplete") from None


def slurm_launch(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) for a process that srun started
    as one task of a job step with several tasks; None when torchrun's RANK or WORLD_SIZE is set (torchrun, or a
    torchrun inside a Slurm job, decides), outside a job step (the batch script itself: its SLURM_NTASKS counts the
    job's tasks, not processes started) or for a one-task step. Rank, world size and local rank are SLURM_PROCID,
    SLURM_STEP_NUM_TASKS (else SLURM_NTASKS) and SLURM_LOCALID; the rendezvous host is the step's first node
    (SLURM_STEP_NODELIST, else SLURM_JOB_NODELIST) and the port is derived from SLURM_JOB_ID, unless MASTER_ADDR or
    MASTER_PORT are set."""
    env = os.environ if env is None else env
    if "RANK" in env or "WORLD_SIZE" in env or "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return None
    world_size = _slurm_int(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS")
    if world_size <= 1:
        return None
    rank = _slurm_int(env, "SLURM_PROCID")
    local_rank = _slurm_int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    address = env.get("MASTER_ADDR") or first_host(nodelist)
    port = env.get("MASTER_PORT") or str(SLURM_PORT_BASE + _slurm_int(env, "SLURM_JOB_ID") % SLURM_PORT_SPAN)
    return {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(local_rank),
            "MASTER_ADDR": address, "MASTER_PORT": port}


def world_size_from_env(env: Mapping[str, str] | None = None) -> int:
    """The number of processes of this run: torchrun's WORLD_SIZE, else the tasks of the Slurm job step this process
    is one of (:func:`slurm_launch`), else 1."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        return int(env["WORLD_SIZE"])
    launch = slurm_launch(env)
    return int(launch["WORLD_SIZE"]) if launch else 1


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
    """Join the process group when launched by torchrun or as one of several srun tasks; pick this rank's device.
    Slurm's task variables are exported as torchrun's (so every part of the program, and torch's env://
    rendezvous, sees one launch convention)."""
    launch = slurm_launch()
    if launch:
        os.environ.update(launch)
        if launch["RANK"] == "0":
            log.info("Slurm task 0 of %s: rendezvous at %s:%s", launch["WORLD_SIZE"], launch["MASTER_ADDR"],
                     launch["MASTER_PORT"])
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

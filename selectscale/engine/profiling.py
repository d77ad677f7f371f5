"""``trainer.profile_steps`` (``debug=profile``): a few training steps under torch.profiler.

The profiler skips one step, warms up on one, then records ``profile_steps`` steps; when the recording ends (or the
run does), it writes the trace into RUN_DIR/profiler/ (TensorBoard's profiler plugin reads that folder, and the
``*.pt.trace.json`` file in it opens in chrome://tracing or https://ui.perfetto.dev) and logs the table of the
costliest operators once. Rank 0 only; 0 steps: no profiler at all.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from selectscale.runs.layout import PROFILER, check_entry

log = logging.getLogger("selectscale")
WAIT_STEPS, WARMUP_STEPS = 1, 1  # the first step (allocations, first kernels) is no measure; one to warm up
TOP_OPS = 15  # rows of the printed table


def profiled_steps(profile_steps: int) -> int:
    """Training steps a run needs for the profiler to record ``profile_steps`` of them."""
    return WAIT_STEPS + WARMUP_STEPS + profile_steps


@contextlib.contextmanager
def step_profiler(profile_steps: int, run_dir: Path, device: torch.device) -> Iterator[object | None]:
    """A started ``torch.profiler.profile`` to ``step()`` after each training step, or None when ``profile_steps``
    is 0. The trace is written, and the table logged, once."""
    if not profile_steps:
        yield None
        return
    folder = Path(run_dir) / PROFILER
    check_entry(folder, folder=True)  # a link or a file where the folder goes: one line, nothing written
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    write_trace = torch.profiler.tensorboard_trace_handler(str(folder))

    def on_trace_ready(profiler) -> None:
        write_trace(profiler)
        log.info("profile of %d training steps (trace: %s; tensorboard --logdir %s):\n%s", profile_steps, folder,
                 folder, profiler.key_averages().table(sort_by=sort_by, row_limit=TOP_OPS))

    schedule = torch.profiler.schedule(wait=WAIT_STEPS, warmup=WARMUP_STEPS, active=profile_steps, repeat=1)
    with torch.profiler.profile(activities=activities, schedule=schedule, on_trace_ready=on_trace_ready,
                                record_shapes=True) as profiler:
        yield profiler

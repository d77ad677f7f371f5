"""One training epoch and one evaluation pass. Metrics accumulate on the device as sums (no host
synchronisation per step) and are reduced across ranks as sums, so every rank reports the same totals."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from selectscale.drop import drop_layers

from .distributed import sum_across_ranks
from .records import progress_bar
from .schedule import drop_strength, learning_rate

log = logging.getLogger("selectscale")
# Without a terminal (a cluster log, `make demo > log`) a progress line this often, in seconds of wall time,
# instead of the bar: an ImageNet epoch is not an hour of silence.
PROGRESS_EVERY_S = 60.0


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


@dataclass(frozen=True)
class StepSettings:
    """The parts of the config a training step reads, converted once at the start of ``fit`` (reading an
    OmegaConf node every step is slow, and per-step code should not see the whole config)."""

    schedule: Any  # the schedule group as a plain object (ScheduleConfig): learning_rate() reads it
    curriculum: Any  # the curriculum group (CurriculumConfig): drop_strength() reads it
    epochs: int
    micro_batches: int
    autocast_device: str | None  # see autocast_device()
    grad_clip_norm: float | None = None  # clip the global gradient norm to this before each step; None: off
    label_smoothing: float = 0.0  # of the training loss (0: off); the evaluation loss is never smoothed

    @classmethod
    def from_config(cls, cfg, device: torch.device) -> StepSettings:
        clip = cfg.trainer.get("grad_clip_norm")
        return cls(_plain(cfg.schedule), _plain(cfg.curriculum), int(cfg.trainer.epochs),
                   int(cfg.trainer.micro_batches), autocast_device(cfg, device),
                   None if clip is None else float(clip), float(cfg.trainer.get("label_smoothing", 0.0)))


def _plain(node) -> Any:
    """A config group as a plain object: its schema dataclass when it has one, else a namespace."""
    value = OmegaConf.to_object(node)
    return SimpleNamespace(**value) if isinstance(value, dict) else value


@dataclass
class StepContext:
    """What a training epoch needs besides the model and the data."""

    settings: StepSettings
    optimizer: torch.optim.Optimizer
    device: torch.device
    drop_target: nn.Module  # the unwrapped model whose drop layers the curriculum drives
    steps_per_epoch: int
    show_progress: bool
    preemption: object  # PreemptionFlag
    global_step: int = 0
    last_strength: float | None = None  # strength last written to the drop layers
    # per-step scalars (logger.log_every_n_steps; rank 0): on_step(step, {train_loss, lr, drop_strength}) at the
    # 0-based optimizer steps 0, k, 2k, ...; 0: never (no call, no host-device sync)
    log_every: int = 0
    on_step: Callable[[int, dict], None] | None = None
    ema: Any = None  # engine.ema.WeightAverage, updated after each optimizer step; None: off
    mixer: Any = None  # engine.mixing.BatchMixer: (images, labels) -> (images, soft targets); None: off
    profiler: Any = None  # torch.profiler.profile (trainer.profile_steps, debug=profile): step() after each step

    def __post_init__(self) -> None:
        self.drop_layers = list(drop_layers(self.drop_target))  # found once, not every step
        self.parameters = [p for group in self.optimizer.param_groups for p in group["params"]]


def autocast_device(cfg, device: torch.device) -> str | None:
    """The device type to run bf16 autocast on when ``trainer.precision`` is bf16 (``auto`` resolved here for a
    config that did not go through ``fit``, which records the resolved value), None for fp32. Read once
    (StepSettings, an evaluation), not per step."""
    precision = cfg.trainer.get("precision", "auto")
    if precision == "auto":
        from .config import resolve_precision

        precision = resolve_precision(cfg.trainer, device).value
    return device.type if precision == "bf16" and device.type in ("cpu", "cuda") else None


def autocast(device_type: str | None):
    """bf16 autocast on ``device_type`` (None: nothing). Inside it the convolutions and the classifier's matmul run
    in bf16 (autocast's lower-precision list), and what follows them sees bf16 tensors (BatchNorm's output, ReLU,
    the residual adds, the drop layers, pooling); BatchNorm computes its statistics in fp32 and keeps its running
    statistics and affine parameters in fp32, cross-entropy runs in fp32 (autocast's fp32 list), the weights,
    their gradients and the SGD update stay fp32 (tests/test_precision.py checks each)."""
    return contextlib.nullcontext() if device_type is None else torch.autocast(device_type, dtype=torch.bfloat16)


def _set_progress(ctx: StepContext, progress: float) -> tuple[float, float]:
    settings = ctx.settings
    lr = learning_rate(settings.schedule, progress, settings.epochs, ctx.steps_per_epoch)
    for group in ctx.optimizer.param_groups:
        group["lr"] = lr
    strength = drop_strength(settings.curriculum, progress, settings.epochs, ctx.steps_per_epoch)
    if strength != ctx.last_strength:  # constant without a curriculum: no write (a kernel per layer) per step
        for layer in ctx.drop_layers:
            layer.strength = strength
        ctx.last_strength = strength
    return lr, strength


@dataclass
class EpochOutcome:
    """What :func:`train_epoch` returns: device sums (loss x images, correct), the images seen, the lr and drop
    strength of the epoch's first step, the index of the next batch, and whether the epoch finished."""

    sums: torch.Tensor
    images: int
    lr: float | None
    strength: float | None
    next_batch: int
    finished: bool

    def partial(self) -> dict:
        """The interrupted epoch's state as a mid-epoch checkpoint stores it (``partial``; CPU tensors)."""
        return dict(images=self.images, lr=self.lr, strength=self.strength, sums=self.sums.cpu())


def train_epoch(model: nn.Module, loader, epoch: int, start_batch: int, ctx: StepContext,
                partial: dict | None = None) -> EpochOutcome:
    """Train from batch ``start_batch`` of ``epoch`` to its end, or until preempted. ``partial``: the state
    of an interrupted epoch from a mid-epoch checkpoint (:meth:`EpochOutcome.partial`), to continue its sums."""
    model.train()
    partial = partial or {}
    sums = torch.zeros(2, device=ctx.device, dtype=torch.float64)
    if "sums" in partial:
        sums += partial["sums"].to(ctx.device)
    images_seen = partial.get("images", 0)
    check_every = 1 if ctx.device.type == "cpu" else 50  # a NaN check syncs: free on CPU, rare on GPU
    first_lr, first_strength = partial.get("lr"), partial.get("strength")
    batch = start_batch
    heartbeat = _Heartbeat(epoch, start_batch, ctx.steps_per_epoch) if ctx.show_progress and not \
        sys.stderr.isatty() else None
    with progress_bar(ctx.steps_per_epoch - start_batch, epoch, ctx.show_progress) as bar:
        for batch, (images, labels) in enumerate(loader, start=start_batch):
            if batch >= ctx.steps_per_epoch:
                break
            lr, strength = _set_progress(ctx, epoch + batch / ctx.steps_per_epoch)
            first_lr, first_strength = (lr, strength) if first_lr is None else (first_lr, first_strength)
            loss = _train_step(model, images, labels, ctx, sums)
            images_seen += labels.shape[0]
            if ctx.log_every and ctx.global_step % ctx.log_every == 0:  # float(loss): a sync on logged steps only
                ctx.on_step(ctx.global_step, dict(train_loss=float(loss), lr=lr, drop_strength=strength))
            ctx.global_step += 1
            if ctx.ema is not None:
                ctx.ema.after_step(ctx.drop_target, ctx.global_step)
            if ctx.profiler is not None:
                ctx.profiler.step()
            bar.update(1)
            if heartbeat is not None:
                heartbeat.step(batch + 1, labels.shape[0], loss)
            if (batch + 1) % check_every == 0 or batch + 1 == ctx.steps_per_epoch:
                _check_finite(loss, sums, epoch, batch)
            if ctx.preemption.received and batch + 1 < ctx.steps_per_epoch:
                return EpochOutcome(sums, images_seen, first_lr, first_strength, batch + 1, finished=False)
    return EpochOutcome(sums, images_seen, first_lr, first_strength, ctx.steps_per_epoch, finished=True)


class _Heartbeat:
    """A log line every :data:`PROGRESS_EVERY_S` seconds: step, images/s, loss, the epoch's time left."""

    def __init__(self, epoch: int, start_batch: int, steps: int) -> None:
        self.epoch, self.start_batch, self.steps = epoch, start_batch, steps
        self.started = self.last = time.perf_counter()
        self.images = 0

    def step(self, done: int, images: int, loss: torch.Tensor) -> None:
        self.images += images
        now = time.perf_counter()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last, elapsed = now, now - self.started
        left = elapsed / max(done - self.start_batch, 1) * (self.steps - done)
        log.info("epoch %d step %d/%d | %.0f img/s | loss %.4f | epoch left ~%.0f s", self.epoch + 1, done,
                 self.steps, self.images / elapsed, float(loss), left)  # float(loss): one sync a minute


def _train_step(model: nn.Module, images, labels, ctx: StepContext, sums: torch.Tensor) -> torch.Tensor:
    """One optimizer step on this rank's batch, as ``micro_batches`` chunks with accumulated gradients.

    Chunk j takes samples j, j + k, j + 2k, ... of the batch: exactly the samples rank j would get in a
    k-process run (the loader shards by stride), so k chunks on one process reproduce k processes,
    BatchNorm statistics included.

    With a mixer the batch is mixed first (the whole rank batch, before the chunks) and the loss takes its soft
    targets; a training image counts as correct when the logits' argmax is the mixed target's argmax (the label of
    the image holding the larger share). ``grad_clip_norm``: the accumulated gradients' global norm is clipped
    before the step (bf16 autocast has no loss scaling, so there is nothing to unscale first)."""
    chunks, settings = ctx.settings.micro_batches, ctx.settings
    targets = labels
    if ctx.mixer is not None:
        images, targets = ctx.mixer(images, labels)
    counted = labels if ctx.mixer is None else targets.argmax(1)
    ctx.optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=ctx.device)
    for chunk in range(chunks):
        chunk_images, chunk_targets = images[chunk::chunks], targets[chunk::chunks]
        chunk_labels = counted[chunk::chunks]
        sync = chunk == chunks - 1 or not hasattr(model, "no_sync")  # DDP all-reduces on the last chunk only
        with contextlib.nullcontext() if sync else model.no_sync(), autocast(settings.autocast_device):
            logits = model(chunk_images)
            loss = F.cross_entropy(logits, chunk_targets, label_smoothing=settings.label_smoothing)
        (loss / chunks).backward()
        with torch.no_grad():
            correct = (logits.argmax(1) == chunk_labels).sum()
            sums += torch.stack([loss.detach().double() * chunk_labels.numel(), correct.double()])
            total += loss.detach() / chunks
    if settings.grad_clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(ctx.parameters, settings.grad_clip_norm)
    ctx.optimizer.step()
    return total


def _check_finite(loss: torch.Tensor, sums: torch.Tensor, epoch: int, batch: int) -> None:
    if not math.isfinite(float(sums[0])):
        raise NonFiniteLossError(
            f"non-finite training loss ({float(loss.detach()):.4g}) at epoch {epoch + 1}, step {batch + 1} "
            "(or within the last check interval): stopping; the last good checkpoint is kept. "
            "Lower schedule.lr or check the data"
        )


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, autocast_type: str | None = None) -> dict:
    """Test loss and top-1/top-5 errors over every test image exactly once, summed across ranks; bf16 autocast
    on ``autocast_type`` (see :func:`autocast_device`) when given. Drops stay off unless the caller is inside
    ``apply_at_inference`` (Figure 3)."""
    model.eval()
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, top-1 correct, top-5 correct
    count = 0
    for images, labels in loader:
        with autocast(autocast_type):
            logits = model(images)
        logits = logits.float()
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        loss = F.cross_entropy(logits, labels, reduction="sum")
        sums += torch.stack([loss.double(), hits[:, 0].sum().double(), hits.any(1).sum().double()])
        count += labels.shape[0]
    totals = torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64).to(device)])
    loss, top1, top5, count = sum_across_ranks(totals).tolist()
    return dict(test_loss=loss / count, test_top1_error=1 - top1 / count, test_top5_error=1 - top5 / count,
                test_images=int(count))

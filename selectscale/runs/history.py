"""Config keys added after runs were recorded, and the value each such run in effect had.

A run recorded before a key existed (its result.json, config.yaml or checkpoint lacks the key) behaved as the
value given here, so comparing it with a run of today, or resuming it under today's code, fills the key in
first: an upgrade neither refuses a resume nor splits a table's rows. A value different from the filled-in
one is a different reading of the paper and stays a difference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _imagenet_only(value: Any) -> Callable[[dict], Any]:
    return lambda flat: value if flat.get("dataset.name") == "imagenet" else None


# The one set of config keys that do not change what a run computes: where things are and how they are shown.
# A resume may change them (rundir), the tables ignore them together with the seed (report.collect), and the
# sweep folder names of configs/train.yaml leave out a subset of them (hydra.job.config.override_dirname; tested).
RUNTIME_KEYS = frozenset({
    "output_dir", "dataset.root", "dataset.download", "dataset.workers", "trainer.resume", "trainer.device",
    "trainer.progress_bar", "trainer.dist_timeout_s", "trainer.compile", "trainer.snapshot_epochs",
    "trainer.profile_steps", "dataset.eval_pool", "dataset.selection_fraction",
})
# Config groups every key of which is a runtime key: the loggers (configs/logger/: where the curves go, not what
# the run computes), so a run logged to CSV resumes, and groups in a table, with one logged to TensorBoard.
RUNTIME_GROUPS = frozenset({"logger"})


def is_runtime_key(key: str) -> bool:
    """Whether the dotted ``key`` is a runtime key (:data:`RUNTIME_KEYS`, or a key of a :data:`RUNTIME_GROUPS`)."""
    return key in RUNTIME_KEYS or key.split(".", 1)[0] in RUNTIME_GROUPS


def _precision_before_it_existed(flat: dict) -> str:
    """The precision a run recorded before ``trainer.precision`` trained in: ``trainer.amp`` on CUDA,
    ``trainer.cpu_amp`` (default false) on the CPU, each meaning bf16 autocast. ``trainer.device=auto`` is read as
    the CPU: every run recorded before the key (result.json ``device``: "cpu (...)") ran on one, no GPU having been
    lent to the project then. A record without ``trainer.amp`` is read by ``cpu_amp`` alone, whatever its device."""
    if str(flat.get("trainer.device", "auto")).startswith("cuda") and "trainer.amp" in flat:
        return "bf16" if flat["trainer.amp"] else "fp32"
    return "bf16" if flat.get("trainer.cpu_amp", False) else "fp32"


_ABSENT = object()  # a key the saved config does not have (None is a value)

# dotted key -> its value in runs recorded before it existed (a constant, or a function of the flat config)
ADDED_KEYS: dict[str, Any] = {
    "dataset.padding_mode": "zeros",  # the only mode there was: torchvision's RandomCrop default
    "dataset.color_jitter": _imagenet_only(0.4),  # fb.resnet.torch's colour augmentation, always on for ImageNet
    "dataset.lighting": _imagenet_only(0.1),
    "dataset.validation_fraction": 0.0,  # every earlier run trained on all its training images
    "dataset.split_seed": 0,
    "dataset.train_per_class": 0,  # every earlier run trained on all its training images
    "model.drop_on_shortcut": False,
    "model.drop_after_stem": False,
    "model.pretrained": None,
    "drop.rounding": "round",
    "drop.block_size": None,  # DropBlock arrived later; no earlier method had a block size
    "schedule.warmup_steps": 0,
    "schedule.warmup_lr": 0.01,
    "curriculum.gamma": 0.001,
    # fp32 or bf16 autocast, as trainer.amp / trainer.cpu_amp decided before trainer.precision existed (the keys
    # stay beside it, their meaning unchanged: docs/reproduction.md, "Precision").
    "trainer.precision": _precision_before_it_existed,
    # The logger group (issue 36): every earlier run logged epoch records only (a runtime key: never compared).
    "logger.log_every_n_steps": 0,
    # The recipe switches (issue 36): every earlier run trained without them.
    "dataset.auto_augment": None,
    "schedule.warmup_mode": "constant",
    "trainer.ema_decay": None,
    "trainer.ema_every": 1,
    "trainer.grad_clip_norm": None,
    "trainer.label_smoothing": 0.0,
    "trainer.mixup_alpha": 0.0,
    "trainer.cutmix_alpha": 0.0,
    "trainer.mix_prob": 1.0,
    "trainer.keep_best": False,
    # The debug= group (issue 36): every earlier run trained on its whole training split, unprofiled.
    "dataset.overfit_batch": False,
    "trainer.profile_steps": 0,  # a runtime key: never compared
    # The evaluation pool (issue 37): scored after training, never used to train (runtime keys: never compared).
    "dataset.eval_pool": False,
    "dataset.selection_fraction": 0.0,
}


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``{"a.b": value}`` (lists kept as they are): the one flattening of a config, used for
    resume checks, TensorBoard hparams and the tables' settings."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def with_added_keys(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` (a dotted-key config) with every key of :data:`ADDED_KEYS` it lacks filled in."""
    filled = dict(flat)
    for key, value in ADDED_KEYS.items():
        if key not in filled:
            filled[key] = value(flat) if callable(value) else value
    return filled


# What the functions of ADDED_KEYS read besides the added keys themselves.
_READ_BY_MAPPINGS = ("dataset.name", "trainer.device", "trainer.amp", "trainer.cpu_amp")


def complete_config(cfg):
    """A run's saved config (``config.yaml``, a DictConfig) with the keys it lacks filled in as :data:`ADDED_KEYS`
    says, so that code of today can read a run recorded before them."""
    from omegaconf import OmegaConf

    flat = {key: OmegaConf.select(cfg, key, default=_ABSENT) for key in (*ADDED_KEYS, *_READ_BY_MAPPINGS)}
    present = {key: value for key, value in flat.items() if value is not _ABSENT}
    filled = OmegaConf.create(OmegaConf.to_container(cfg))
    for key, value in with_added_keys(present).items():
        if key in ADDED_KEYS and key not in present:
            OmegaConf.update(filled, key, value, force_add=True)
    return filled


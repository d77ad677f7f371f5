"""``validate(cfg)``: the values of a composed config and the rules spanning groups (the schemas are in
:mod:`selectscale.engine.schema`). It raises :class:`ConfigError` with one line naming the key, the value and
what is allowed. Names come from the registries (drop methods, models, data sets), never from a list here.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from selectscale.data.datasets import DATASETS
from selectscale.data.loader import PADDING_MODES
from selectscale.drop import DROP_LAYERS, build_drop, drop_arguments
from selectscale.drop.functional import ROUNDINGS, SCORES
from selectscale.errors import ConfigError
from selectscale.loggers import logger_problem
from selectscale.models import list_models, model_spec
from selectscale.models.cifar_resnet import SHORTCUTS

from .debug_checks import validate_debug
from .recipe_checks import validate_recipe
from .schema import DropConfig, TrainConfig, milestone_epochs, register_configs

__all__ = ["ConfigError", "Precision", "TrainConfig", "drop_kwargs", "interpolation_problem", "model_options",
           "register_configs", "resolve_precision", "unset_variable_problem", "validate"]

SCHEDULES = ("step", "cosine")
CURRICULA = ("none", "linear", "exponential")
PRECISIONS = ("auto", "fp32", "bf16")  # trainer.precision; a run records fp32 or bf16, never auto


def _fail(key: str, value, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        _fail(key, value, f"use one of {', '.join(map(str, choices))}")


def _check_range(key: str, value, low, high, low_open: bool = False) -> None:
    if value is None or value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        _fail(key, value, f"allowed range is {bracket}{low}, {high}]")


def drop_kwargs(drop: DictConfig) -> dict:
    """The set arguments of ``drop`` that its method takes: the keywords of ``build_drop(drop.name, ...)``."""
    return {key: drop[key] for key in drop_arguments(drop.name) if drop.get(key) is not None}


def validate_drop(drop: DictConfig) -> None:
    _check_choice("drop.name", drop.name, list(DROP_LAYERS))
    takes = drop_arguments(drop.name)
    for key, default in _DROP_DEFAULTS.items():
        if key not in takes and drop.get(key) != default:
            takers = [name for name in DROP_LAYERS if key in drop_arguments(name)]
            _fail(f"drop.{key}", drop[key], f"{drop.name} has no {key.replace('_', ' ')}; only "
                  f"{', '.join(takers)} take it")
    if drop.name == "none":
        return
    for key in ("top_rate", "retain_rate"):
        if key in takes:
            _check_range(f"drop.{key}", drop[key], 0.0, 1.0)
    if "top_rate" in takes:
        _check_choice("drop.score", drop.score, SCORES)
        _check_choice("drop.rounding", drop.rounding, ROUNDINGS)
    try:  # the layer's own rules (Selectout's 1 - p <= t, block sizes): its message names the argument
        build_drop(drop.name, **drop_kwargs(drop))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"drop.{error}") from error


_DROP_DEFAULTS = {key: value for key, value in vars(DropConfig()).items() if key != "name"}


def validate_schedule(cfg: DictConfig) -> None:
    schedule = cfg.schedule
    _check_choice("schedule.name", schedule.name, SCHEDULES)
    _check_range("schedule.lr", schedule.lr, 0.0, 100.0, low_open=True)
    if schedule.name == "step":
        _check_range("schedule.gamma", schedule.gamma, 0.0, 1.0, low_open=True)
        milestones = list(schedule.milestones)
        if any(not 0 < m < 1 for m in milestones) or milestones != sorted(set(milestones)):
            _fail("schedule.milestones", milestones,
                  "milestones are fractions of the run, strictly increasing inside (0, 1), e.g. [0.3,0.6,0.8]")
        epochs = milestone_epochs(milestones, cfg.trainer.epochs)
        if list(schedule.milestone_epochs) != epochs:
            _fail("schedule.milestone_epochs", list(schedule.milestone_epochs),
                  "it is derived from schedule.milestones (fractions) and trainer.epochs; set those instead")
    if schedule.warmup_steps < 0:
        _fail("schedule.warmup_steps", schedule.warmup_steps, "it must be >= 0 (0: no warm-up)")
    _check_range("schedule.warmup_lr", schedule.warmup_lr, 0.0, 100.0, low_open=True)
    curriculum = cfg.curriculum
    _check_choice("curriculum.name", curriculum.name, CURRICULA)
    _check_range("curriculum.gamma", curriculum.gamma, 0.0, 1.0, low_open=True)
    _check_choice("curriculum.per", curriculum.per, ("step", "epoch"))
    _check_range("curriculum.ramp_fraction", curriculum.ramp_fraction, 0.0, 1.0, low_open=True)


def validate_trainer(trainer: DictConfig, world_size: int) -> None:
    if trainer.epochs < 1:
        _fail("trainer.epochs", trainer.epochs, "it must be >= 1")
    if trainer.batch_size < 1 or trainer.batch_size % world_size:
        _fail("trainer.batch_size", trainer.batch_size,
              f"the global batch must be >= 1 and divisible by the {world_size} processes")
    if trainer.micro_batches < 1 or (trainer.batch_size // world_size) % trainer.micro_batches:
        _fail("trainer.micro_batches", trainer.micro_batches,
              f"each process's batch of {trainer.batch_size // world_size} must split into that many equal chunks")
    if trainer.sync_bn and world_size > 1 and str(trainer.device) == "cpu":
        _fail("trainer.sync_bn", True, "torch's SyncBatchNorm runs on CUDA only; use trainer.sync_bn=false on CPU")
    _check_range("trainer.momentum", trainer.momentum, 0.0, 1.0)
    _check_range("trainer.weight_decay", trainer.weight_decay, 0.0, 1.0)
    _check_choice("trainer.resume", trainer.resume, ("never", "auto"))
    for key in ("eval_every", "checkpoint_every", "dist_timeout_s"):
        if trainer[key] < 1:
            _fail(f"trainer.{key}", trainer[key], "it must be >= 1")
    snapshots = list(trainer.snapshot_epochs)
    if any(not 1 <= epoch <= trainer.epochs for epoch in snapshots) or snapshots != sorted(set(snapshots)):
        _fail("trainer.snapshot_epochs", snapshots, f"epochs strictly increasing within 1..{trainer.epochs}")
    if trainer.max_steps_per_epoch is not None and trainer.max_steps_per_epoch < 1:
        _fail("trainer.max_steps_per_epoch", trainer.max_steps_per_epoch, "it must be >= 1 or null")
    device = trainer.device
    if device not in ("auto", "cpu") and not str(device).startswith("cuda"):
        _fail("trainer.device", device, "use auto, cpu, cuda or cuda:N")
    if trainer.nesterov and trainer.momentum == 0:
        _fail("trainer.nesterov", True, "Nesterov momentum needs trainer.momentum > 0")
    _check_choice("trainer.precision", trainer.get("precision", "auto"), PRECISIONS)


@dataclass(frozen=True)
class Precision:
    """The arithmetic a run trains in, ``fp32`` or ``bf16`` (autocast), and why: the one log line at the start and
    result.json's ``precision`` / ``precision_reason``."""

    value: str
    reason: str

    def line(self) -> str:
        """``precision: bf16 (auto: native bf16 on Intel(R) Xeon(R) Processor)``."""
        return f"precision: {self.value} ({self.reason})"


def resolve_precision(trainer: DictConfig, device, kept: str | None = None) -> Precision:
    """What ``trainer.precision`` means on ``device`` (a torch.device).

    ``kept``: the precision a resumed run started in (its config.yaml or checkpoint): ``auto`` keeps it, on any
    machine; an explicit fp32/bf16 is taken as asked (and the resume check refuses it if it differs).
    ``auto`` on the CPU: bf16 where it has native bf16 (:func:`selectscale.runs.result.native_bf16`, oneDNN's own
    check), fp32 where bf16 would be emulated; on CUDA: bf16 where ``torch.cuda.is_bf16_supported()``. The older
    switches still speak through ``auto``: ``trainer.cpu_amp=true`` is bf16 on the CPU (even emulated),
    ``trainer.amp=false`` fp32 on CUDA; contradicting an explicit precision with them is a ConfigError."""
    asked = trainer.get("precision", "auto")
    _check_choice("trainer.precision", asked, PRECISIONS)
    cpu_amp, amp = bool(trainer.get("cpu_amp", False)), bool(trainer.get("amp", True))
    if device.type == "cpu" and cpu_amp and asked == "fp32":
        _fail("trainer.cpu_amp", True, "it asks for bf16 on the CPU and trainer.precision=fp32 for fp32; set only "
              "trainer.precision (cpu_amp is its older spelling)")
    if device.type == "cuda" and not amp and asked == "bf16":
        _fail("trainer.amp", False, "it asks for fp32 on CUDA and trainer.precision=bf16 for bf16; set only "
              "trainer.precision (amp is its older spelling)")
    if asked != "auto":
        return Precision(asked, f"trainer.precision={asked}")
    if kept in ("fp32", "bf16"):
        return Precision(kept, "auto: kept from the run being resumed")
    if device.type == "cpu":
        from selectscale.runs.result import NATIVE_BF16_ENV, cpu_model, native_bf16

        if cpu_amp:
            return Precision("bf16", "trainer.cpu_amp=true")
        name = cpu_model()[0]
        forced = f", as ${NATIVE_BF16_ENV} forces" if os.environ.get(NATIVE_BF16_ENV, "").strip() in ("0", "1") else ""
        if native_bf16():
            return Precision("bf16", f"auto: native bf16 on {name}{forced}")
        return Precision("fp32", f"auto: no native bf16 on {name}{forced}")
    if device.type == "cuda":
        import torch

        if not amp:
            return Precision("fp32", "trainer.amp=false")
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"auto: bf16 supported on {name}")
        return Precision("fp32", f"auto: no bf16 on {name}")
    return Precision("fp32", f"auto: no bf16 autocast on {device.type}")


_INT64 = (-(2**63), 2**63 - 1)


def check_numbers(node, prefix: str = "") -> None:
    """Every float of the config finite and every integer inside int64 (what torch accepts), or ConfigError:
    a NaN learning rate would otherwise be blamed on the loss, a NaN ramp silently disable the curriculum."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        dotted = f"{prefix}{key}"
        if isinstance(value, dict | list):
            check_numbers(value, f"{dotted}.")
        elif isinstance(value, float) and not math.isfinite(value):
            _fail(dotted, value, "it must be a finite number")
        elif isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
            _fail(dotted, value, "it is beyond the 64-bit integers torch accepts")


# ${oc.env:NAME} and ${oc.env:NAME,default} (OmegaConf's resolver; a default makes an unset NAME fine).
_ENV_REFERENCE = re.compile(r"""\$\{\s*oc\.env\s*:\s*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?\s*(,|\})""")


def unset_variables(value: str) -> list[str]:
    """The environment variables that ``value``'s ``${oc.env:NAME}`` interpolations (those without a default) read
    and that are not set: our own reading of the value, so the message names the variable without relying on
    OmegaConf's text."""
    return [m.group(1) for m in _ENV_REFERENCE.finditer(value) if m.group(2) == "}" and m.group(1) not in os.environ]


def unset_variable_message(key: str, value: str, name: str) -> str:
    return (f"{key}={value!r}: the environment variable {name} is not set; set it (export {name}=...) or give "
            f"the interpolation a default: ${{oc.env:{name},DEFAULT}}")


def _raw_values(node, prefix: str = ""):
    """(dotted key, value) of every leaf of an unresolved container (interpolations kept as text)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, dict | list):
            yield from _raw_values(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def unset_variable_problem(cfg: DictConfig) -> str | None:
    """One line for the first value of ``cfg`` that reads an environment variable that is not set, or None."""
    for key, value in _raw_values(OmegaConf.to_container(cfg, resolve=False)):
        if isinstance(value, str) and (names := unset_variables(value)):
            return unset_variable_message(key, value, names[0])
    return None


def interpolation_problem(cfg: DictConfig, error: OmegaConfBaseException) -> str:
    """One line for an interpolation of ``cfg`` that does not resolve: an unset environment variable named (with
    the fix), otherwise the key (OmegaConf's ``full_key`` attribute) and its unresolved value."""
    problem = unset_variable_problem(cfg)
    if problem is not None:
        return problem
    key = getattr(error, "full_key", None) or "a value"
    raw = dict(_raw_values(OmegaConf.to_container(cfg, resolve=False))).get(key, "?")
    return (f"{key}={raw!r}: its ${{...}} interpolation does not resolve ({type(error).__name__}); fix it, or set "
            f"{key} to a plain value")


def validate_devices(trainer: DictConfig) -> None:
    """A CUDA device asked for where there is none (or not that many) is a one-line error, not a traceback."""
    device = str(trainer.device)
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.split(":")[1]) if ":" in device and device.split(":")[1].isdigit() else 0
    if index >= count:
        _fail("trainer.device", device, f"this machine has {count} CUDA device(s); use trainer.device=auto or cpu")


def validate_files(cfg: DictConfig) -> None:
    """The file-system checks, after every value check (a user with two mistakes hears of both in turn)."""
    validate_dataset_files(cfg.dataset)
    pretrained = cfg.model.get("pretrained")
    if pretrained is not None and not Path(pretrained).expanduser().is_file():
        _fail("model.pretrained", pretrained, "no such file; pass a weight file (e.g. torchvision's "
              "resnet50-0676ba61.pth) or leave it null")


def validate_dataset_files(dataset: DictConfig) -> None:
    """The data folder exists (or will be downloaded)."""
    if dataset.name != "synthetic" and not dataset.download and not Path(dataset.root).is_dir():
        _fail("dataset.root", dataset.root,
              f"the folder does not exist; point dataset.root at the folder holding the {dataset.name} files")


def validate_dataset(dataset: DictConfig) -> None:
    _check_choice("dataset.name", dataset.name, DATASETS)
    _check_choice("dataset.on_bad_image", dataset.on_bad_image, ("fail", "skip"))
    _check_choice("dataset.padding_mode", dataset.padding_mode, PADDING_MODES)
    for key in ("color_jitter", "lighting"):
        if dataset.name == "imagenet":
            _check_range(f"dataset.{key}", dataset[key], 0.0, 1.0)  # None too: configs/dataset/imagenet.yaml sets it
        elif dataset[key] is not None:
            _fail(f"dataset.{key}", dataset[key], "it is ImageNet's colour augmentation; leave it null for "
                  f"{dataset.name}")
    if dataset.name == "imagenet" and dataset.padding_mode != "zeros":
        _fail("dataset.padding_mode", dataset.padding_mode,
              "ImageNet's RandomResizedCrop pads nothing; it is for CIFAR")
    _validate_holdout(dataset)
    if dataset.name == "synthetic":
        for key in ("train_size", "test_size"):
            if dataset[key] < 1:
                _fail(f"dataset.{key}", dataset[key], "it must be >= 1")
        if dataset.num_classes < 2:
            _fail("dataset.num_classes", dataset.num_classes, "it must be >= 2")


def _validate_holdout(dataset: DictConfig) -> None:
    """``validation_fraction`` in [0, 1), ``train_per_class`` >= 0, both in-memory data sets only;
    ``split_seed`` >= 0."""
    fraction = dataset.validation_fraction
    if not 0.0 <= fraction < 1.0:
        _fail("dataset.validation_fraction", fraction, "it is the share of the training images held out for "
              "validation, in [0, 1) (e.g. 0.2); 0 evaluates on the test set")
    for key in ("validation_fraction", "train_per_class"):
        if dataset[key] and dataset.name == "imagenet":
            _fail(f"dataset.{key}", dataset[key], "a held-out split and a training subset exist for cifar10, "
                  "cifar100 and synthetic only; leave it 0 for imagenet")
    if dataset.split_seed < 0:
        _fail("dataset.split_seed", dataset.split_seed, "it must be >= 0")
    if dataset.train_per_class < 0:
        _fail("dataset.train_per_class", dataset.train_per_class, "it is the training images kept per class, "
              ">= 0 (0 keeps all)")
    if not 0.0 <= dataset.get("selection_fraction", 0.0) < 1.0:
        _fail("dataset.selection_fraction", dataset.selection_fraction, "it is the validation share of the training "
              "images the rates were chosen on (left out of the evaluation pool), in [0, 1) (e.g. 0.2)")
    if dataset.get("eval_pool") and (not dataset.train_per_class or dataset.validation_fraction):
        _fail("dataset.eval_pool", True, "the evaluation pool is the training images a run on a subset leaves "
              "unused: set dataset.train_per_class > 0 and dataset.validation_fraction=0, or eval_pool=false")


def validate_model(cfg: DictConfig) -> None:
    """The model exists, fits the data set, and takes every option that is set (the placements exist only where
    the network has the slot): all read from the model's registration (:class:`selectscale.models.ModelSpec`)."""
    model = cfg.model
    _check_choice("model.name", model.name, list_models())
    spec = model_spec(model.name)
    for key, value in _set_model_options(model).items():
        if key not in spec.options:
            takers = [name for name in list_models() if key in model_spec(name).options]
            _fail(f"model.{key}", value, f"{model.name} has no {key} option; only {', '.join(takers)} take it")
    if model.shortcut is not None:
        _check_choice("model.shortcut", model.shortcut, SHORTCUTS)
    if cfg.dataset.name not in spec.datasets:
        _fail("model.name", model.name, f"{model.name} is built for {', '.join(spec.datasets)}; use it with "
              f"dataset={spec.datasets[0]}, or choose a model for {cfg.dataset.name}")


def _set_model_options(model: DictConfig) -> dict:
    """The ``create_model`` options the config sets: shortcut when not null, the placements when true."""
    options = {} if model.shortcut is None else {"shortcut": model.shortcut}
    options.update({key: True for key in ("drop_on_shortcut", "drop_after_stem") if model.get(key)})
    return options


def model_options(model: DictConfig) -> dict:
    """The keyword options of ``create_model`` for this model config (validated: the model takes them all)."""
    options = _set_model_options(model)
    if model.get("pretrained"):
        options["pretrained"] = model.pretrained
    return options


def validate(cfg: DictConfig, world_size: int = 1) -> None:
    """Check every value and every rule that spans groups, then the file system and the devices; raise
    ConfigError on the first problem."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:  # an ${oc.env:VAR} with VAR unset, a ${key} that names nothing...
        raise ConfigError(interpolation_problem(cfg, error)) from None
    check_numbers(resolved)
    validate_dataset(cfg.dataset)
    validate_model(cfg)
    validate_drop(cfg.drop)
    validate_trainer(cfg.trainer, world_size)
    validate_schedule(cfg)
    validate_recipe(cfg)  # the recipe switches (issue 36)
    validate_debug(cfg)  # the debug= group's keys (issue 36)
    if cfg.seed < 0:
        _fail("seed", cfg.seed, "it must be >= 0")
    # the loggers: names from their registry, options from each one's signature, its package installed (issue 36)
    if (problem := logger_problem(resolved.get("logger") or {})) is not None:
        raise ConfigError(problem)
    validate_files(cfg)
    validate_devices(cfg.trainer)

"""Typed configuration schemas (Hydra ConfigStore): a misspelt key or a wrong type fails when the config is
composed. The values and the rules spanning groups are checked by :func:`selectscale.engine.config.validate`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


@dataclass
class DatasetConfig:
    name: str = "cifar10"  # cifar10 | cifar100 | imagenet | synthetic
    root: str = "data"  # folder holding cifar-10-batches-py/, cifar-100-python/ or train/ + val/
    download: bool = False  # CIFAR only: fetch and check the official archive into root
    train_size: int = 5000  # synthetic only: images
    test_size: int = 1000  # synthetic only: images
    num_classes: int = 10  # synthetic only; the real data sets know their own
    workers: int = 8  # imagenet only: DataLoader worker processes per rank
    on_bad_image: str = "fail"  # imagenet only: fail | skip (count and warn)
    padding_mode: str = "zeros"  # CIFAR and synthetic: the 4-pixel crop padding, zeros | reflect (Zagoruyko's WRN)
    # CIFAR and synthetic: hold this class-balanced fraction of the training images out, train on the rest and
    # evaluate on it instead of the test images (choosing a rate without the test set, issue 22); 0: off.
    validation_fraction: float = 0.0
    split_seed: int = 0  # the draw of the held-out images: fixed (not the run's seed) so a grid shares one split
    # CIFAR and synthetic: train on this many images of each class only (a class-balanced subset drawn with
    # split_seed, disjoint from the validation images and the same whatever validation_fraction); 0: all.
    train_per_class: int = 0
    # CIFAR and synthetic, with train_per_class > 0 (issue 37): after the last epoch also score the run on the
    # evaluation pool, every training image it neither trained on nor chose its rates on (the selection grid's
    # validation split: selection_fraction, drawn with split_seed), class-balanced (selectscale/data/pool.py),
    # -> result.json "eval_pool". Never used for choosing; does not change training (runtime keys).
    eval_pool: bool = False
    selection_fraction: float = 0.0
    # ImageNet only (configs/dataset/imagenet.yaml sets them; null elsewhere): ColorJitter brightness, contrast
    # and saturation, and the AlexNet PCA lighting std; 0 disables either.
    color_jitter: float | None = None
    lighting: float | None = None
    # CIFAR and synthetic: null | randaugment | trivialaugment (torchvision v2, per image, uint8, after the crop
    # and flip, before normalisation: selectscale/data/autoaugment.py); null: off (the paper's recipe).
    auto_augment: str | None = None
    # CIFAR and synthetic (debug=overfit_batch): train on ONE fixed batch of trainer.batch_size training images,
    # un-augmented, repeated at every step (selectscale/data/overfit.py): the loss must go to 0. false: off.
    overfit_batch: bool = False


@dataclass
class ModelConfig:
    name: str = "resnet20"
    shortcut: str | None = None  # CIFAR ResNets/WRNs: pad (default) | avgpool
    # The options a model takes are declared where it is registered (register_model(options=...)).
    drop_on_shortcut: bool = False  # resnet50: also a drop after each downsample BN (29 drop layers, not 27)
    drop_after_stem: bool = False  # CIFAR ResNets/WRNs/ResNeXts: also a drop after the stem's BN + ReLU
    pretrained: str | None = None  # a weight file loaded strictly before training (torchvision's resnet50-*.pth)


@dataclass
class DropConfig:
    # The keys are the drop layers' arguments (selectscale.drop.drop_arguments says which method takes which);
    # a key the chosen method does not take must keep its default here.
    name: str = "none"  # a key of selectscale.drop.DROP_LAYERS: none | dropout | ... | select_dropblock
    top_rate: float | None = None  # the selective methods (selectout, selectscale, select_dropblock)
    retain_rate: float | None = None  # every method but none
    block_size: int | None = None  # dropblock, select_dropblock: block side in positions (Ghiasi et al.: 7)
    score: str = "max"  # selectout, selectscale: max | mean | avgpool
    nonnegative_input: bool = False
    score_window: int = 3
    score_stride: int = 1
    rounding: str = "round"  # selective methods: round (half up, the paper's round) | floor | ceil


@dataclass
class ScheduleConfig:
    name: str = "step"  # step | cosine
    lr: float = 0.1  # initial learning rate, for the global batch
    milestones: list[float] = field(default_factory=lambda: [0.3, 0.6, 0.8])  # fractions of the run
    gamma: float = 0.2  # step: lr multiplier at each milestone
    warmup_steps: int = 0  # the first steps at warmup_lr (He et al.'s ResNet-110: 0.01 for ~400 steps); 0: none
    warmup_lr: float = 0.01
    # constant: warmup_lr for warmup_steps steps (the default); linear: per step from warmup_lr up to the schedule
    warmup_mode: str = "constant"
    # Derived, shown in the printed config: the milestones as epochs of this run. Do not set it.
    milestone_epochs: list[int] = "${milestone_epochs:${schedule.milestones},${trainer.epochs}}"


@dataclass
class CurriculumConfig:
    name: str = "none"  # none | linear | exponential (strength 0 -> 1)
    ramp_fraction: float = 1.0  # linear: fraction of the run over which strength ramps up
    gamma: float = 0.001  # exponential: 1 - exp(-gamma * step), per optimizer step (Morerio et al.'s code)
    per: str = "step"  # linear, exponential: update strength every step or every epoch


@dataclass
class TrainerConfig:
    epochs: int = 200
    batch_size: int = 128  # global batch, split evenly across ranks
    micro_batches: int = 1  # split each rank's batch into this many sequential chunks (gradient accumulation)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto | fp32 | bf16 (autocast). auto: bf16 on a CPU with native bf16 (oneDNN's check) and on a GPU that
    # supports it, else fp32. A run records the resolved value; a resumed run keeps its own.
    precision: str = "auto"
    amp: bool = True  # older spelling, read by precision=auto only: false = fp32 on CUDA
    cpu_amp: bool = False  # older spelling, read by precision=auto only: true = bf16 on the CPU (even emulated)
    channels_last: bool = True  # NHWC: 1.2-1.4x on the CPU for the CIFAR nets (results/benchmarks.md), standard on GPU
    compile: bool = False
    sync_bn: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms; exact resume on CPU
    eval_every: int = 1  # epochs; the last epoch is always evaluated
    checkpoint_every: int = 1  # epochs; the last epoch always writes one
    snapshot_epochs: list[int] = field(default_factory=list)  # keep the weights after these epochs (Figure 1)
    resume: str = "never"  # never | auto (continue the run directory from its last checkpoint)
    dist_timeout_s: int = 600  # a collective that waits longer fails the job instead of hanging
    progress_bar: bool = True  # tqdm on an interactive terminal, rank 0 only
    max_steps_per_epoch: int | None = None  # shorten epochs (smoke tests); None: the whole split
    profile_steps: int = 0  # debug=profile: record this many training steps with torch.profiler (RUN_DIR/profiler/)
    # Recipe switches (issue 36), all off by default (the paper's recipe): docs/reproduction.md, "Recipe switches".
    ema_decay: float | None = None  # EMA of the weights and buffers (AveragedModel), evaluated beside them; None: off
    ema_every: int = 1  # update the EMA every this many optimizer steps
    grad_clip_norm: float | None = None  # clip the gradients' global L2 norm to this; None: off
    label_smoothing: float = 0.0  # cross-entropy label smoothing; 0: off
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing of image pairs (Zhang et al.); 0: off
    cutmix_alpha: float = 0.0  # CutMix's Beta(alpha, alpha) box (Yun et al.); 0: off. Both > 0: one of them per batch
    mix_prob: float = 1.0  # the chance that a batch is mixed (when mixup_alpha or cutmix_alpha > 0)
    keep_best: bool = False  # also keep checkpoint.best.pt: the weights of the lowest VALIDATION error (needs
    # dataset.validation_fraction > 0; never chosen on the test split)


@dataclass
class TrainConfig:
    seed: int = 0
    output_dir: str | None = None  # None: Hydra's run directory
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    drop: DropConfig = field(default_factory=DropConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # The logger group (configs/logger/): the chosen loggers by name, each with its options (selectscale.loggers
    # validates names and options: the registry and each logger's keyword arguments), and log_every_n_steps: also
    # log train loss, lr and drop strength every this many optimizer steps (0 or null: epoch records only).
    logger: dict[str, typing.Any] = field(default_factory=lambda: {"log_every_n_steps": 0})


# Groups whose schema takes keys it does not declare, added on the command line with `+group.key=value`: none
# today. Every other key added with + must be one the schema declares (selectscale.argv_checks refuses the rest:
# Hydra itself adds any key given with +, even to a typed group, so `+trainer.some_typo=3` trained silently).
EXTRA_KEYS_ALLOWED: frozenset[str] = frozenset()


def undeclared_key(key: str) -> tuple[str, tuple[str, ...]] | None:
    """Where the dotted ``key`` (e.g. ``trainer.some_typo``) leaves the typed schema: (the group it would be
    added to, "" for the top level, and the keys that group declares), or None when the schema declares it, or
    the place takes any key (a group in EXTRA_KEYS_ALLOWED, or a value that is not a schema dataclass)."""
    node: type = TrainConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        group = ".".join(parts[:depth])
        if group in EXTRA_KEYS_ALLOWED:
            return None
        types = typing.get_type_hints(node)
        if part not in types:
            return group, tuple(f.name for f in dataclasses.fields(node))
        node = types[part]
        if not dataclasses.is_dataclass(node):  # a plain value (or a list): nothing typed below it
            return None
    return None


def milestone_epochs(milestones, epochs) -> list[int]:
    """Milestone fractions of the run as epochs: [0.3, 0.6, 0.8] of 200 epochs is [60, 120, 160]. At least 1
    (the order kept): in a run shortened to 1 epoch, 0.3 would round to epoch 0, a drop before the first step
    (lr x gamma from the start); no milestone falls before the end of epoch 1 (docs/reproduction.md)."""
    return [max(1, round(float(fraction) * int(epochs))) for fraction in milestones]


def register_configs() -> None:
    """Register the schema that ``configs/train.yaml`` extends (its first defaults entry) and the
    ``milestone_epochs`` resolver. Call before composing (train.py and the tests do)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("milestone_epochs"):
        OmegaConf.register_new_resolver("milestone_epochs", milestone_epochs)

"""Build this rank's training and evaluation loaders from the ``dataset`` and ``trainer`` config."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from omegaconf import DictConfig

from selectscale.data import build_dataset, build_eval_loader, build_loaders
from selectscale.data.cifar import UnofficialFilesWarning
from selectscale.data.holdout import SubsetTooLarge
from selectscale.data.overfit import RepeatedBatch
from selectscale.data.pool import NoPool

from .config import ConfigError
from .distributed import DistContext

log = logging.getLogger("selectscale")


@dataclass
class TrainingData:
    """This rank's loaders for one run (the engine's view; the loaded data set itself is data.DatasetBundle)."""

    train: object  # yields (images, labels) on the device; has set_epoch, __len__, num_samples
    test: object
    num_classes: int
    info: dict  # name, train_size, test_size, num_classes, verified: recorded in result.json
    pool: object = None  # dataset.eval_pool: the evaluation pool's loader (unused training images), else None


def build_data(cfg: DictConfig, ctx: DistContext) -> TrainingData:
    """The data set named by ``cfg.dataset.name``, sharded for this rank, with the per-rank batch."""
    data = cfg.dataset
    colour = {} if data.name != "imagenet" else dict(color_jitter=data.color_jitter, lighting=data.lighting)
    try:
        with _unofficial_files_logged():
            bundle = build_dataset(data.name, data.root, download=data.download, num_train=data.train_size,
                                   num_test=data.test_size, num_classes=data.num_classes,
                                   on_bad_image=data.on_bad_image, validation_fraction=data.validation_fraction,
                                   split_seed=data.split_seed, train_per_class=data.train_per_class,
                                   eval_pool=bool(data.get("eval_pool")),
                                   selection_fraction=float(data.get("selection_fraction") or 0.0), **colour)
    except (SubsetTooLarge, NoPool) as error:
        raise ConfigError(str(error)) from None
    if len(bundle.train) < cfg.trainer.batch_size:  # drop_last: not one full batch per epoch
        raise ConfigError(f"trainer.batch_size={cfg.trainer.batch_size} is larger than the training set "
                          f"({len(bundle.train)} images): no full batch fits; lower trainer.batch_size")
    # Inputs stay float32: under bf16 autocast the first convolution casts them itself.
    train, test = build_loaders(bundle, cfg.trainer.batch_size // ctx.world_size, seed=cfg.seed, device=ctx.device,
                                rank=ctx.rank, world_size=ctx.world_size, channels_last=cfg.trainer.channels_last,
                                workers=data.workers, padding_mode=data.padding_mode,
                                auto_augment=data.auto_augment)
    overfit = bool(data.get("overfit_batch", False))
    if overfit:  # debug=overfit_batch: one fixed, un-augmented batch (validated: CIFAR-shaped sets only)
        train = RepeatedBatch(train)
    info = dict(name=data.name, train_size=cfg.trainer.batch_size if overfit else len(bundle.train),
                test_size=len(bundle.test),
                num_classes=bundle.num_classes, verified=bool(bundle.verified), evaluated_on=bundle.evaluated_on)
    pool = None if bundle.pool is None else build_eval_loader(
        bundle, bundle.pool, cfg.trainer.batch_size // ctx.world_size, seed=cfg.seed, device=ctx.device,
        rank=ctx.rank, world_size=ctx.world_size, channels_last=cfg.trainer.channels_last)
    return TrainingData(train, test, bundle.num_classes, info, pool)


@contextlib.contextmanager
def _unofficial_files_logged() -> Iterator[None]:
    """CIFAR files that are not the official ones: one log line of our own instead of the warning's several (with
    its source line, it read like a traceback at the start of every such run). Other warnings pass as they were."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnofficialFilesWarning)
        yield
    for item in caught:
        if isinstance(item.message, UnofficialFilesWarning):
            log.warning("%s: %d file(s) are not the official ones (md5 differs), e.g. %s: read anyway; result.json "
                        "records dataset.verified=false", item.message.title, len(item.message.files),
                        item.message.files[0])
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno, source=item.source)

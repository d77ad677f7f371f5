"""Score a trained network on the evaluation pool (issue 37): the unused training images and the test images.

:func:`score_pool` evaluates the pool's two parts (each image once, summed across ranks, as
:func:`~selectscale.engine.steps.evaluate` does) and returns what result.json records under ``eval_pool``: the
error over both parts together (the study's measure: ~4,500 images on the mini files instead of 1,017), each
part's, the counts of misclassified images, and how the pool was drawn. The trainer calls it after the last
epoch; ``selectscale-evaluate RUN --pool --record`` calls it on a finished run's checkpoint.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .steps import evaluate

log = logging.getLogger("selectscale")
POOL_KEY = "eval_pool"  # the result.json entry


def _errors(metrics: dict) -> int:
    """Misclassified images (top-1) from a fraction over a count: an integer, so that parts add exactly."""
    return round(metrics["test_top1_error"] * metrics["test_images"])


def score_pool(network: nn.Module, pool, test, device: torch.device, autocast_type: str | None, *,
               selection_fraction: float, split_seed: int, num_classes: int) -> dict:
    """Top-1 errors (fractions) of ``network`` over the pool's unused training images (loader ``pool``), the test
    images (``test``) and both together, with the counts; ``selection_fraction`` and ``split_seed`` say which
    images were left out as the rates' validation split."""
    unused, tested = evaluate(network, pool, device, autocast_type), evaluate(network, test, device, autocast_type)
    unused_errors, test_errors = _errors(unused), _errors(tested)
    images = unused["test_images"] + tested["test_images"]
    return dict(top1_error=(unused_errors + test_errors) / images, images=images,
                errors=unused_errors + test_errors,
                unused_top1_error=unused["test_top1_error"], unused_images=unused["test_images"],
                unused_errors=unused_errors, unused_per_class=unused["test_images"] // num_classes,
                test_top1_error=tested["test_top1_error"], test_images=tested["test_images"],
                test_errors=test_errors, selection_fraction=selection_fraction, split_seed=split_seed)


def final_pool_scores(network: nn.Module, data, dataset_cfg, ctx, autocast_type: str | None) -> dict:
    """The trainer's call after the last epoch: :func:`score_pool` on ``data.pool`` and ``data.test`` (a
    TrainingData) with the run's pool settings, and one log line on rank 0."""
    scores = score_pool(network, data.pool, data.test, ctx.device, autocast_type,
                        selection_fraction=float(dataset_cfg.selection_fraction),
                        split_seed=int(dataset_cfg.split_seed), num_classes=data.num_classes)
    if ctx.is_main:
        log.info("evaluation pool: top-1 %.2f%% on %d images (%d unused training images %.2f%%, %d test images "
                 "%.2f%%)", 100 * scores["top1_error"], scores["images"], scores["unused_images"],
                 100 * scores["unused_top1_error"], scores["test_images"], 100 * scores["test_top1_error"])
    return scores

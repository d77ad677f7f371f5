"""Evaluate a finished run's weights without training: ``selectscale-evaluate RUN_DIR [key=value ...]``.

    selectscale-evaluate runs/table1/wrn20_8-selectscale/seed0                       # its own test set
    selectscale-evaluate RUN_DIR dataset.root=/data/cifar-10-c trainer.device=cuda    # another copy or device
    selectscale-evaluate RUN_DIR --with-drops --repeats 5                            # drops on at inference
    selectscale-evaluate RUN_DIR --pool dataset.selection_fraction=0.2 --record      # the evaluation pool

Top-1 and top-5 error and the loss over every test image exactly once (the training loop's ``evaluate``), in
eval mode; ``--with-drops`` switches only the drop layers on (Figure 3's mode) and averages ``--repeats`` passes.
``--pool`` scores the evaluation pool instead (issue 37: the test images plus every training image the run neither
trained on nor chose its rates on, ``dataset.selection_fraction``; selectscale/data/pool.py) and ``--record`` adds
it to the run's result.json as ``eval_pool`` (never overwriting another value): a finished run with its checkpoint
gets the study's measure without retraining.
Only the data (``dataset.*``) and how to run (``trainer.device``, ``trainer.batch_size``, ``trainer.amp``,
``trainer.cpu_amp``, ``trainer.channels_last``) may change: the network is the run's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

import selectscale
from selectscale.data import build_dataset, build_eval_loader, build_loaders
from selectscale.drop import apply_at_inference
from selectscale.engine.config import validate
from selectscale.engine.distributed import choose_device
from selectscale.engine.pool import POOL_KEY, score_pool
from selectscale.engine.steps import autocast_device, evaluate
from selectscale.errors import ConfigError, FigureError, SelectScaleError
from selectscale.runs import load_run
from selectscale.runs.result import add_result_entry

CHANGEABLE = ("dataset.", "trainer.device", "trainer.batch_size", "trainer.amp", "trainer.cpu_amp",
              "trainer.channels_last")


def _with_overrides(cfg, overrides: list[str]):
    bad = [item for item in overrides if "=" not in item or not item.split("=", 1)[0].startswith(CHANGEABLE)]
    if bad:
        raise ConfigError(f"{bad[0]}: only the data and how to run may change at evaluation "
                          f"({', '.join(CHANGEABLE)}*), as key=value")
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as error:
        raise ConfigError(f"{' '.join(overrides)}: {str(error).splitlines()[0]}") from error


def evaluate_run(run_dir: Path, overrides: list[str], with_drops: bool, repeats: int) -> dict:
    """The run's test metrics (fractions), over ``repeats`` passes with drops on, or one pass without."""
    run = load_run(run_dir)  # refuses a checkpoint of another setting (ForeignRunError)
    cfg = _with_overrides(OmegaConf.merge(run.config, {"model": {"pretrained": None}}), overrides)  # the run's weights
    validate(cfg)
    device = choose_device(str(cfg.trainer.device), local_rank=0)
    data = cfg.dataset
    bundle = build_dataset(data.name, data.root, num_train=data.train_size, num_test=data.test_size,
                           num_classes=data.num_classes)
    _, test = build_loaders(bundle, cfg.trainer.batch_size, seed=cfg.seed, device=device,
                            channels_last=cfg.trainer.channels_last, workers=data.workers)
    model = run.build_model(device, cfg)  # ForeignRunError when the weights are not this network's
    if bundle.num_classes != run.num_classes():
        raise ConfigError(f"the data set has {bundle.num_classes} classes, the run was trained on {run.num_classes()}: "
                          "evaluate on a copy of the run's own data set")
    model.eval()
    passes = []
    for _ in range(repeats if with_drops else 1):
        if with_drops:
            with apply_at_inference(model):
                passes.append(evaluate(model, test, device, autocast_device(cfg, device)))
        else:
            passes.append(evaluate(model, test, device, autocast_device(cfg, device)))
    summary = {key: statistics.fmean(p[key] for p in passes) for key in ("test_top1_error", "test_top5_error",
                                                                          "test_loss")}
    return dict(run_dir=str(run_dir), dataset=data.name, root=str(data.root), verified=bool(bundle.verified),
                test_images=passes[0]["test_images"], with_drops=with_drops, repeats=len(passes), **summary)


def pool_run(run_dir: Path, overrides: list[str], record: bool) -> dict:
    """The run's scores on the evaluation pool (:func:`selectscale.engine.pool.score_pool`); with ``record``, also
    added to its result.json (``recorded``: whether this call wrote it)."""
    run = load_run(run_dir)
    cfg = _with_overrides(OmegaConf.merge(run.config, {"model": {"pretrained": None}, "dataset": {"eval_pool": True}}),
                          overrides)
    validate(cfg)
    device = choose_device(str(cfg.trainer.device), local_rank=0)
    data = cfg.dataset
    bundle = build_dataset(data.name, data.root, num_train=data.train_size, num_test=data.test_size,
                           num_classes=data.num_classes, split_seed=data.split_seed,
                           train_per_class=data.train_per_class, eval_pool=True,
                           selection_fraction=data.selection_fraction)
    loaders = dict(seed=cfg.seed, device=device, channels_last=cfg.trainer.channels_last)
    _, test = build_loaders(bundle, cfg.trainer.batch_size, **loaders)
    pool = build_eval_loader(bundle, bundle.pool, cfg.trainer.batch_size, **loaders)
    model = run.build_model(device, cfg)
    scores = score_pool(model, pool, test, device, autocast_device(cfg, device),
                        selection_fraction=float(data.selection_fraction), split_seed=int(data.split_seed),
                        num_classes=bundle.num_classes)
    recorded = add_result_entry(run_dir, POOL_KEY, scores) if record else False
    return dict(run_dir=str(run_dir), dataset=data.name, root=str(data.root), recorded=recorded, **scores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selectscale-evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run directory (config.yaml + checkpoint.pt)")
    parser.add_argument("overrides", nargs="*", help="key=value: dataset.* and trainer.{device,batch_size,amp,...}")
    parser.add_argument("--with-drops", action="store_true", help="drop layers on at inference (Figure 3)")
    parser.add_argument("--repeats", type=int, default=1, help="with --with-drops: passes to average")
    parser.add_argument("--pool", action="store_true", help="score the evaluation pool (unused training images "
                        "+ test images; dataset.selection_fraction= the rates' validation share)")
    parser.add_argument("--record", action="store_true", help="with --pool: add it to result.json as eval_pool")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--version", action="version", version=f"selectscale {selectscale.__version__}")
    args = parser.parse_intermixed_args(argv)  # options before or after the key=value overrides
    try:
        if args.repeats < 1:
            raise ConfigError(f"--repeats={args.repeats} must be >= 1")
        if (args.record and not args.pool) or (args.pool and args.with_drops):
            raise ConfigError("--record goes with --pool only, and --pool scores without drops (no --with-drops)")
        result = (pool_run(args.run_dir, args.overrides, args.record) if args.pool else
                  evaluate_run(args.run_dir, args.overrides, args.with_drops, args.repeats))
    except (SelectScaleError, FigureError, FileNotFoundError, ValueError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback (evaluation writes no file)
        print("stopped by Ctrl-C; nothing was written", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.pool:
        print(f"{result['run_dir']}: evaluation pool top-1 error {100 * result['top1_error']:.2f}% on "
              f"{result['images']} images ({result['unused_images']} unused training images "
              f"{100 * result['unused_top1_error']:.2f}%, {result['test_images']} test images "
              f"{100 * result['test_top1_error']:.2f}%){'; recorded in result.json' if result['recorded'] else ''}")
    else:
        mode = f", drops on at inference, mean of {result['repeats']}" if args.with_drops else ""
        print(f"{result['run_dir']}: test top-1 error {100 * result['test_top1_error']:.2f}%, top-5 "
              f"{100 * result['test_top5_error']:.2f}%, loss {result['test_loss']:.4f} on {result['test_images']} "
              f"images of {result['dataset']} ({result['root']}, verified {result['verified']}){mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

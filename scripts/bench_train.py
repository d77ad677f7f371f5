"""Training throughput of the framework vs the common PyTorch recipe, measured side by side in one run.

For each model and drop method, after a warm-up, the same number of optimizer steps of the same batch size:

- ``baseline``: the recipe most reproductions use: a map-style dataset of uint8 images turned into PIL
  images with per-image torchvision transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
  Normalize) through a ``DataLoader`` with ``--workers`` processes (pinned memory on CUDA), fp32, NCHW,
  eager, ``torch.optim.SGD`` with its defaults and ``loss.item()`` every step for the running loss.
- ``ours`` (one or more ``--variant``): what ``train.py`` runs: the real config composed from ``configs/``
  (the recipe of the data set, the trainer defaults, plus the variant's overrides), the model built by the
  engine, the device-resident :class:`~selectscale.data.DeviceLoader` and the engine's own ``train_epoch``
  (device-side metric sums).

Both see random uint8 images of CIFAR's shape (content does not change the cost). Measurements alternate
between the variants in ``--rounds`` rounds so that a change of machine load hits both; each figure is the
median over rounds. CPU time is a monotonic clock; CUDA time is ``torch.cuda.Event`` pairs around the
timed steps. On CUDA the script also reports model FLOP/s (3 x forward FLOPs per image, from
``count_macs``) as a fraction of ``--peak-tflops`` (MFU). The Markdown report names the date, device, torch
version and the command.

    python scripts/bench_train.py                                   # CPU defaults: resnet110, wrn20_4
    python scripts/bench_train.py --variant ours= --variant "fp32=trainer.precision=fp32"
    python scripts/bench_train.py --models wrn20_8 resnext29_8x64d --variant "compiled=trainer.compile=true"
    python scripts/bench_train.py --models resnet20 resnet110 --drops none selectscale --baseline-bf16  # issue 35

``--baseline-bf16`` adds a second baseline, the same plain loop with the same bf16 autocast as train.py's
(``torch.autocast(device, torch.bfloat16)`` around the forward pass and the loss), so that the engine's own gain shows
apart from the precision's; each variant of ours names the precision it resolved to (``trainer.precision=auto``: bf16
on a CPU with native bf16). The CPU report gives every figure's minimum, median and maximum over the rounds and the
load average before and after.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from selectscale.data import CIFAR_MEAN_STD, DeviceLoader
from selectscale.engine import register_configs
from selectscale.engine.config import resolve_precision
from selectscale.engine.model_setup import build_model
from selectscale.engine.steps import StepContext, StepSettings, autocast, autocast_device, evaluate, train_epoch
from selectscale.models.complexity import count_macs
from selectscale.runs.result import cpu_model

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = CIFAR_MEAN_STD["cifar10"]
DROPS = ("none", "spatial_dropout", "selectscale")


class NoPreemption:
    received = None


class UInt8Images(Dataset):
    """torchvision's CIFAR10.__getitem__ pattern: a uint8 HWC array -> PIL image -> transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images.permute(0, 2, 3, 1).contiguous().numpy(), labels.tolist()
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def compose_config(model: str, drop: str, device: str, batch_size: int, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=[
            "dataset=cifar10", f"model={model}", f"drop={drop}", f"trainer.device={device}",
            f"trainer.batch_size={batch_size}", "trainer.progress_bar=false", *overrides])


def cpu_label() -> str:
    """This CPU for a report's heading: its model, whether it has native bf16, and torch's thread count."""
    name, native = cpu_model()
    return f"{name} ({'native' if native else 'no native'} bf16), {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Seconds between start() and stop(): CUDA events on a GPU, a monotonic clock on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        if self.device.type == "cuda":
            self.begin, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.begin = time.perf_counter()

    def stop(self) -> float:
        if self.device.type == "cuda":
            self.end.record()
            self.end.synchronize()
            return self.begin.elapsed_time(self.end) / 1000
        return time.perf_counter() - self.begin


class Baseline:
    """The common recipe on one model: a step generator over a persistent DataLoader."""

    def __init__(self, cfg, images, labels, device: torch.device, workers: int, bf16: bool = False) -> None:
        """``bf16``: the forward pass and the loss under bf16 autocast, as train.py's bf16 (the plain-bf16 loop)."""
        torch.manual_seed(0)
        self.device, self.autocast = device, device.type if bf16 else None
        self.model = build_model(cfg, 10, device)  # same network and drop layers as ours
        if cfg.trainer.channels_last:  # the baseline is NCHW, whatever ours uses
            self.model = self.model.to(memory_format=torch.contiguous_format)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                                         nesterov=True)
        self.loader = DataLoader(UInt8Images(images, labels), batch_size=cfg.trainer.batch_size, shuffle=True,
                                 num_workers=workers, pin_memory=device.type == "cuda", drop_last=True,
                                 persistent_workers=workers > 0)
        self.batches = iter(())
        self.running_loss = 0.0

    def worker_pids(self) -> list[int]:
        workers = getattr(self.batches, "_workers", None) or []
        return [worker.pid for worker in workers if worker.pid is not None]

    def _next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def steps(self, count: int) -> None:
        self.model.train()
        for _ in range(count):
            images, labels = self._next_batch()
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            with autocast(self.autocast):
                loss = F.cross_entropy(self.model(images), labels)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.running_loss += loss.item()  # the usual per-step logging: a host sync on GPU


class Ours:
    """The engine's path: the composed config, its model, DeviceLoader and ``train_epoch``."""

    def __init__(self, cfg, images, labels, device: torch.device, model: torch.nn.Module | None = None) -> None:
        """``model``: a network built elsewhere (bench_selection.py's older layers) instead of ``cfg``'s."""
        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.model = build_model(cfg, 10, device) if model is None else model
        self.network = torch.compile(self.model) if cfg.trainer.compile else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                                         nesterov=True, foreach=None if device.type == "cuda" else True)
        self.loader = DeviceLoader(images, labels, cfg.trainer.batch_size, train=True, seed=0, mean=MEAN, std=STD,
                                   device=device, channels_last=cfg.trainer.channels_last)
        self.ctx = StepContext(StepSettings.from_config(cfg, device), self.optimizer, device, self.model,
                               len(self.loader), False, NoPreemption())
        self.epoch, self.batch = 0, 0

    def evaluation_images_per_second(self, images, labels, timer: Timer) -> float:
        """Test-pass throughput (the engine's ``evaluate``), for the epoch-time projection."""
        loader = DeviceLoader(images, labels, 2 * self.cfg.trainer.batch_size, train=False, seed=0, mean=MEAN,
                              std=STD, device=self.device, channels_last=self.cfg.trainer.channels_last)
        evaluate(self.network, loader, self.device, autocast_device(self.cfg, self.device))  # warm-up
        synchronize(self.device)
        timer.start()
        evaluate(self.network, loader, self.device, autocast_device(self.cfg, self.device))
        return len(labels) / timer.stop()

    def steps(self, count: int) -> None:
        while count > 0:
            if self.batch >= len(self.loader):
                self.epoch, self.batch = self.epoch + 1, 0
            end = min(len(self.loader), self.batch + count)
            self.ctx.steps_per_epoch = end  # train_epoch stops after batch ``end - 1``
            self.loader.set_epoch(self.epoch, self.batch)
            train_epoch(self.network, self.loader, self.epoch, self.batch, self.ctx)
            count -= end - self.batch
            self.batch = end


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuClock:
    """CPU seconds instead of wall seconds (``--clock cpu``): this process's (all its threads) plus, for a runner
    with DataLoader workers, everything its workers used since its previous window (their prefetching between
    windows included), so time taken by other programs on a shared machine does not count."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.worker_seen: dict[int, float] = {}

    def start(self, runner=None) -> None:
        self.runner, self.begin = runner, time.process_time()

    def stop(self) -> float:
        seconds = time.process_time() - self.begin
        for pid in getattr(self.runner, "worker_pids", lambda: [])():
            now = _process_cpu_seconds(pid)
            seconds += now - self.worker_seen.get(pid, now)  # the first window counts from here on (warm-up)
            self.worker_seen[pid] = now
        return seconds

    def settle(self, runner) -> None:
        """Start counting ``runner``'s workers now (after the warm-up)."""
        for pid in getattr(runner, "worker_pids", lambda: [])():
            self.worker_seen[pid] = _process_cpu_seconds(pid)


def measure(runner, steps: int, timer) -> float:
    """Seconds per step over ``steps`` steps (wall, or CPU with :class:`CpuClock`)."""
    synchronize(timer.device)
    timer.start(runner) if isinstance(timer, CpuClock) else timer.start()
    runner.steps(steps)
    return timer.stop() / steps


def bench_model(model: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Rows (model, drop, variant, seconds per step, images/s) for every drop method, alternated by round."""
    generator = torch.Generator().manual_seed(0)
    count = args.batch_size * max(8, args.steps)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    runners = {}
    for drop in args.drops:
        baseline_cfg = compose_config(model, drop, device.type, args.batch_size, [])
        runners[(drop, "baseline")] = Baseline(baseline_cfg, images, labels, device, args.workers)
        if args.baseline_bf16:
            runners[(drop, "baseline-bf16")] = Baseline(baseline_cfg, images, labels, device, args.workers, bf16=True)
        for name, overrides in args.variants:
            ours_cfg = compose_config(model, drop, device.type, args.batch_size, overrides)
            runners[(drop, name)] = Ours(ours_cfg, images, labels, device)
    timer, times = CpuClock() if args.clock == "cpu" else Timer(device), {key: [] for key in runners}
    for runner in runners.values():
        runner.steps(args.warmup)  # allocator, kernels, compilation, worker start
        if isinstance(timer, CpuClock):
            timer.settle(runner)
    for _ in range(args.rounds):
        for key, runner in runners.items():
            times[key].append(measure(runner, args.steps, timer))
    eval_rates = {name: runners[(args.drops[0], name)].evaluation_images_per_second(images, labels, Timer(device))
                  for name, _ in args.variants}
    rows = []
    for (drop, variant), seconds in times.items():
        step = statistics.median(seconds)
        rows.append(dict(model=model, drop=drop, variant=variant, step_s=step, images_s=args.batch_size / step,
                         spread=(max(seconds) - min(seconds)) / step, eval_images_s=eval_rates.get(variant),
                         min_step_s=min(seconds), max_step_s=max(seconds), seconds=list(seconds)))
    return rows


def mfu(model: str, images_per_second: float, peak_tflops: float) -> tuple[float, float]:
    """(model TFLOP/s, fraction of the peak): 3 x forward FLOPs per trained image (forward + backward)."""
    with torch.device("meta"):
        network = build_model(compose_config(model, "none", "cpu", 128, []), 10, torch.device("meta"))
    flops = 3 * 2 * count_macs(network, 32) * images_per_second
    return flops / 1e12, flops / (peak_tflops * 1e12)


def table1_projection(rows: list[dict], variant: str) -> tuple[list[str], float] | None:
    """Hours for Table 1 (per model 5 methods x 5 seeds x 200 epochs of 50,000 + 10,000 test images), from
    the measured ``ours`` rates; a method not measured takes the slowest measured method of its model."""
    lines, total = [], 0.0
    for model in ("resnet110", "wrn20_4", "wrn20_8"):
        measured = {r["drop"]: r for r in rows if r["model"] == model and r["variant"] == variant}
        if not measured:
            return None
        slowest = min(r["images_s"] for r in measured.values())
        epoch_s = {drop: 50_000 / (measured[drop]["images_s"] if drop in measured else slowest)
                   + 10_000 / next(iter(measured.values()))["eval_images_s"]
                   for drop in ("none", "dropout", "spatial_dropout", "spatial_scale", "selectscale")}
        hours = sum(epoch_s.values()) * 5 * 200 / 3600
        total += hours
        lines.append(f"| {model} | {epoch_s['none']:.1f} | {epoch_s['selectscale']:.1f} | {hours:.1f} |")
    return lines, total


def variant_precision(overrides: list[str], device: torch.device) -> str:
    """What a variant's overrides resolve ``trainer.precision`` to on this device, with the reason."""
    return resolve_precision(compose_config("resnet20", "none", device.type, 128, overrides).trainer, device).line()


def _rate_range(row: dict, batch: int) -> str:
    """``min / median / max`` images/s over the rounds."""
    return f"{batch / row['max_step_s']:,.0f} / {row['images_s']:,.0f} / {batch / row['min_step_s']:,.0f}"


def paired_ratio(slower: dict, faster: dict) -> str:
    """``slower``'s step time over ``faster``'s, round by round (the two ran back to back in each round, so a change
    of load between rounds falls on both): the median of the per-round ratios, their range in brackets, and the
    ratio of the two fastest rounds."""
    ratios = [a / b for a, b in zip(slower["seconds"], faster["seconds"], strict=True)]
    return (f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] "
            f"(best {slower['min_step_s'] / faster['min_step_s']:.2f}x)")


def render_cpu_with_bf16_baseline(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    """The issue-35 layout: ours against the plain loop in fp32 and in bf16, with min/median/max and the load."""
    lines = [f"## Training throughput against the plain loop in fp32 and bf16, {datetime.date.today()}: CPU "
             f"{cpu_label()}", "", f"- Command: `{command}`",
             f"- torch {torch.__version__}, batch {args.batch_size}, {args.warmup} warm-up steps, {args.rounds} rounds "
             f"of {args.steps} steps, every runner in turn each round; random uint8 CIFAR-shaped images; plain loop: "
             f"per-image torchvision transforms, DataLoader with {args.workers} workers, NCHW, eager, in fp32 and "
             "under the same bf16 autocast as train.py; ours: train.py's path with " + "; ".join(
                 f"{name}: {' '.join(o) or '(defaults)'} -> {variant_precision(o, torch.device('cpu'))}"
                 for name, o in args.variants) + ".",
             f"- Load average (1, 5, 15 min) before: {args.load_before}; after: {args.load_after}.",
             "- Clock: " + ("**CPU seconds** (this process's threads, plus the plain loop's DataLoader workers' CPU "
                            "since its previous window), so 'img/s' is images per CPU-second: the work a step costs, "
                            "whatever else the machine runs" if args.clock == "cpu" else "wall seconds") + ".",
             "- Cells: images/s over the rounds as min / median / max. Ratios are paired by round (each round runs "
             "every runner back to back): the median of the per-round ratios, [their range], and (best: the fastest "
             "round over the fastest round). 'ours / plain': speed-up of ours; 'vs no drop': ours' SelectScale "
             "step time over ours' no-drop step time.", "",
             "| model | drop | variant | plain fp32 img/s (min/med/max) | plain bf16 img/s (min/med/max) | ours img/s "
             "(min/med/max) | ours / plain fp32 | ours / plain bf16 | ours step (ms) | vs no drop |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    index = {(r["model"], r["drop"], r["variant"]): r for r in rows}
    batch = args.batch_size
    for r in (r for r in rows if not r["variant"].startswith("baseline")):
        fp32, bf16 = index[(r["model"], r["drop"], "baseline")], index[(r["model"], r["drop"], "baseline-bf16")]
        plain = index.get((r["model"], "none", r["variant"]))
        overhead = paired_ratio(r, plain) if plain and plain is not r else "—"
        cells = [r["model"], r["drop"], r["variant"], _rate_range(fp32, batch), _rate_range(bf16, batch),
                 _rate_range(r, batch),
                 paired_ratio(fp32, r), paired_ratio(bf16, r),
                 f"{1000 * r['step_s']:.1f}", overhead]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render(rows: list[dict], args: argparse.Namespace, device: torch.device, command: str) -> str:
    if device.type == "cpu" and args.baseline_bf16:
        return render_cpu_with_bf16_baseline(rows, args, command)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU {cpu_label()}"
    lines = [f"## Training throughput, {datetime.date.today()}: {name}", "",
             f"- Command: `{command}`", f"- torch {torch.__version__}, batch {args.batch_size}, {args.warmup} warm-up "
             f"steps, median of {args.rounds} rounds of {args.steps} steps, variants alternated; random uint8 "
             f"CIFAR-shaped images; baseline DataLoader workers: {args.workers}; variants of ours (train.py "
             "overrides on top of the defaults): " + "; ".join(f"{name}: {' '.join(o) or '(defaults)'}"
                                                           for name, o in args.variants) + ".", "",
             "| model | drop | variant | baseline img/s | ours img/s | ours / baseline | ours step (ms) | vs no drop |"
             + (" ours TFLOP/s | MFU |" if device.type == "cuda" else " spread |"),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if device.type == "cuda" else "")]
    index = {(r["model"], r["drop"], r["variant"]): r for r in rows}
    for r in (r for r in rows if not r["variant"].startswith("baseline")):
        base = index[(r["model"], r["drop"], "baseline")]
        plain = index.get((r["model"], "none", r["variant"]))
        overhead = f"{100 * (r['step_s'] / plain['step_s'] - 1):+.1f}%" if plain else "—"
        cells = [r["model"], r["drop"], r["variant"], f"{base['images_s']:,.0f}", f"{r['images_s']:,.0f}",
                 f"{r['images_s'] / base['images_s']:.2f}x", f"{1000 * r['step_s']:.1f}", overhead]
        if device.type == "cuda":
            tflops, fraction = mfu(r["model"], r["images_s"], args.peak_tflops)
            cells += [f"{tflops:.0f}", f"{100 * fraction:.0f}%"]
        else:
            cells.append(f"{100 * max(r['spread'], base['spread']):.0f}%")
        lines.append("| " + " | ".join(cells) + " |")
    for name, _ in args.variants:
        projection = table1_projection(rows, name)
        if projection:
            body, total = projection
            lines += ["", f"Table 1 projection on this device ({name}): {total:.1f} hours for 75 runs x 200 "
                      "epochs of 50,000 training + 10,000 test images (dropout and SpatialScale take the slowest "
                      "measured method's time).", "",
                      "| model | epoch s (no drop) | epoch s (SelectScale) | hours for 25 runs |", "|---|---|---|---|",
                      *body]
    return "\n".join(lines) + "\n"


def command_line(script: str, argv: list[str] | None) -> str:
    """How the script was called, for the report's command line."""
    return f"python scripts/{script} " + " ".join(sys.argv[1:] if argv is None else argv)


def emit_report(report: str, out: Path | None) -> None:
    """Print the Markdown report and append it to ``out`` when given."""
    print(report)
    if out:
        with out.open("a") as handle:
            handle.write("\n" + report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: resnet110 wrn20_4 (CPU), all CIFAR (GPU)")
    parser.add_argument("--drops", nargs="+", default=list(DROPS), choices=DROPS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="baseline DataLoader worker processes")
    parser.add_argument("--variant", action="append", default=None, metavar="NAME=OVERRIDES",
                        help="a configuration of ours: a name, '=', space-separated train.py overrides "
                             "(repeatable; default: 'ours=' the trainer defaults)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: CPU seconds of this process and the plain loop's DataLoader workers (Linux), not "
                             "wall seconds: robust to other programs on a shared machine; run it with "
                             "OMP_NUM_THREADS=1, where CPU time is work (with more threads it counts spin-waiting)")
    parser.add_argument("--baseline-bf16", action="store_true",
                        help="also the plain loop under train.py's bf16 autocast (issue 35's second baseline)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200: 989)")
    parser.add_argument("--out", type=Path, default=None, help="append the Markdown report to this file")
    args = parser.parse_args(argv)
    args.variants = [(spec.split("=", 1)[0], spec.split("=", 1)[1].split()) for spec in args.variant or ["ours="]]
    device = torch.device(args.device)
    models = args.models or (["resnet110", "wrn20_4"] if device.type == "cpu" else
                             ["resnet110", "wrn20_4", "wrn20_8", "resnext29_8x64d"])
    register_configs()
    args.load_before = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    rows = []
    for model in models:
        rows += bench_model(model, args, device)
        print(f"{model}: " + ", ".join(f"{r['drop']}/{r['variant']} {r['images_s']:,.0f} img/s"
                                       for r in rows if r["model"] == model), flush=True)
    args.load_after = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    emit_report(render(rows, args, device, command_line("bench_train.py", argv)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

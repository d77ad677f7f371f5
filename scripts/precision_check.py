"""Does bf16 autocast change a result? Issue 35's equivalence check: the same runs in fp32 and in bf16, paired by seed.

    python scripts/precision_check.py run                 # trains what is missing (resumes what was interrupted)
    python scripts/precision_check.py report              # the comparison as Markdown, from the runs' result.json
    python scripts/precision_check.py report --out results/precision_check/README.md

Each run is ``train.py dataset=cifar10 dataset.root=ROOT model=resnet20 trainer.epochs=EPOCHS seed=K
trainer.precision=P output_dir=RUNS/P/seedK`` (the paper's CIFAR recipe shortened to EPOCHS, no drop); ``run``
trains them in the order bf16 seed 0, fp32 seed 0, bf16 seed 1, ... so that a change of machine load falls on both
precisions alike. ``report`` lists the final test error of every run, each precision's mean and seed-to-seed SD and
range, and the paired difference bf16 - fp32 by seed with its 95% confidence interval (Student's t, n - 1 degrees
of freedom); it reads only result.json (and metrics.jsonl for the epoch times), so the committed runs re-render it.
A precision check mixes precisions on purpose: it is not a table of ``selectscale.experiments``, whose report
refuses exactly that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def run_dir(runs: Path, precision: str, seed: int) -> Path:
    return runs / precision / f"seed{seed}"


def overrides(args: argparse.Namespace, precision: str, seed: int) -> list[str]:
    return ["dataset=cifar10", f"dataset.root={args.root}", "model=resnet20", "drop=none",
            f"trainer.epochs={args.epochs}", f"seed={seed}", f"trainer.precision={precision}",
            "trainer.progress_bar=false", "trainer.resume=auto", f"output_dir={run_dir(args.runs, precision, seed)}"]


def read_result(path: Path) -> dict | None:
    try:
        result = json.loads((path / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def run(args: argparse.Namespace) -> int:
    """Train every missing run, ``--parallel`` at once (each with OMP_NUM_THREADS = cores // parallel)."""
    jobs = []
    for seed in args.seeds:
        for precision in ("bf16", "fp32"):
            result = read_result(run_dir(args.runs, precision, seed))
            if result is not None and result.get("complete") is True:
                print(f"{precision} seed {seed}: finished, skipped", flush=True)
            else:
                jobs.append((precision, seed))
    env = dict(os.environ)
    if args.parallel > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.parallel))
    running: list[tuple[str, int, subprocess.Popen]] = []
    failed = 0
    while jobs or running:
        while jobs and len(running) < args.parallel:
            precision, seed = jobs.pop(0)
            command = [sys.executable, "train.py", *overrides(args, precision, seed)]
            print("$ " + shlex.join(["python", *command[1:]]), flush=True)
            (REPO / run_dir(args.runs, precision, seed)).parent.mkdir(parents=True, exist_ok=True)
            log = open(REPO / f"{run_dir(args.runs, precision, seed)}.log", "a")  # noqa: SIM115  (closed below)
            running.append((precision, seed, subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                                               stderr=subprocess.STDOUT)))
        precision, seed, process = running.pop(0)
        status = process.wait()
        if status != 0:
            print(f"error: {precision} seed {seed} exited with status {status}", file=sys.stderr, flush=True)
            failed = failed or status
        else:
            print(f"{precision} seed {seed}: finished", flush=True)
    return failed


def t_quantile(level: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, dof))


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def report(args: argparse.Namespace) -> str:
    rows: dict[int, dict[str, dict]] = {}
    for precision in PRECISIONS:
        for seed_dir in sorted((args.runs / precision).glob("seed*")):
            result = read_result(seed_dir)
            if result is None or result.get("complete") is not True:
                continue
            rows.setdefault(int(result["seed"]), {})[precision] = result | {"_dir": seed_dir}
    paired = sorted(seed for seed, by in rows.items() if set(by) == set(PRECISIONS))
    if not paired:
        raise SystemExit(f"error: no seed has finished runs of both precisions under {args.runs}")
    first = rows[paired[0]]["bf16"]
    config = first["config"]
    lines = ["# bf16 autocast against fp32: the same runs, paired by seed (issue 35)", "",
             f"resnet20, no drop, {config['dataset']['name']} from `{config['dataset']['root']}` "
             f"({first['dataset']['train_size']:,} training / {first['dataset']['test_size']:,} test images, "
             f"verified: {str(first['dataset']['verified']).lower()}), the paper's CIFAR recipe shortened to "
             f"{config['trainer']['epochs']} epochs (batch {config['trainer']['batch_size']}), seeds "
             f"{', '.join(map(str, paired))}; CPU: {first['environment']['cpu_model']} "
             f"({first['environment']['cpu_count']} cores), torch {first['environment']['torch']}. Final test error is "
             "the last epoch's (never the best). Re-render: `python scripts/precision_check.py report`.", "",
             "| seed | fp32 test error (%) | bf16 test error (%) | bf16 - fp32 (points) | fp32 train error (%) | "
             "bf16 train error (%) | fp32 s/epoch | bf16 s/epoch |", "|---|---|---|---|---|---|---|---|"]
    errors = {precision: [rows[seed][precision]["test_top1_error"] for seed in paired] for precision in PRECISIONS}
    seconds = {precision: [] for precision in PRECISIONS}
    for index, seed in enumerate(paired):
        cells = [str(seed), _pct(errors["fp32"][index]), _pct(errors["bf16"][index]),
                 f"{100 * (errors['bf16'][index] - errors['fp32'][index]):+.2f}"]
        train, times = [], []
        for precision in PRECISIONS:
            metrics = [json.loads(line) for line in (rows[seed][precision]["_dir"] / "metrics.jsonl").read_text()
                       .splitlines() if line.strip()]
            train.append(_pct(metrics[-1]["train_top1_error"]))
            epoch_s = statistics.median(record["seconds"] for record in metrics)
            seconds[precision].append(epoch_s)
            times.append(f"{epoch_s:.1f}")
        lines.append("| " + " | ".join(cells + train + times) + " |")
    n = len(paired)
    differences = [b - f for f, b in zip(errors["fp32"], errors["bf16"], strict=True)]
    lines += ["", "| | fp32 | bf16 |", "|---|---|---|"]
    for label, function in (("mean test error (%)", statistics.mean),
                            ("seed-to-seed SD (points)", statistics.stdev if n > 1 else None),
                            ("range over seeds (%)", None)):
        if label.startswith("range"):
            cells = [f"{_pct(min(errors[p]))}-{_pct(max(errors[p]))}" for p in PRECISIONS]
        elif function is None:
            cells = ["n/a", "n/a"]
        else:
            cells = [_pct(function(errors[p])) for p in PRECISIONS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    mean_diff = statistics.mean(differences)
    lines += ["", f"Paired difference bf16 - fp32 over {n} seeds: mean {100 * mean_diff:+.2f} points"]
    if n > 1:
        sd_diff = statistics.stdev(differences)
        half = t_quantile(0.95, n - 1) * sd_diff / math.sqrt(n)
        spread = max(statistics.stdev(errors[p]) for p in PRECISIONS)
        within = abs(mean_diff) <= spread
        low, high = 100 * (mean_diff - half), 100 * (mean_diff + half)
        lines[-1] += (f", SD {100 * sd_diff:.2f}, 95% CI [{low:+.2f}, {high:+.2f}] (t, {n - 1} dof). Seed-to-seed "
                      f"SD (the larger of the two): {100 * spread:.2f} points; the mean difference is "
                      f"{'within' if within else 'beyond'} it. With {n} seeds the interval rules out only differences "
                      "beyond its bounds: no difference larger than the seed noise is shown, equal errors are not.")
    lines += ["", f"Median epoch time (train + test pass, from metrics.jsonl; the threads and the machine's other work "
              f"are the runs' own, so this is not a speed measurement): fp32 "
              f"{statistics.median(seconds['fp32']):.1f} s, bf16 {statistics.median(seconds['bf16']):.1f} s "
              f"({statistics.median(seconds['fp32']) / statistics.median(seconds['bf16']):.2f}x).", "",
              "Commands (`python scripts/precision_check.py run` runs them in this order, skipping finished runs):", "",
              "```bash"]
    for seed in paired:
        for precision in ("bf16", "fp32"):
            recorded = rows[seed][precision]["config"]
            lines.append("python train.py " + " ".join(overrides(argparse.Namespace(
                root=recorded["dataset"]["root"], epochs=recorded["trainer"]["epochs"], runs=args.runs), precision,
                seed)))
    lines += ["```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--runs", type=Path, default=Path("results/precision_check/runs"))
    parser.add_argument("--root", default="/work/shared/data/cifar-mini", help="run: the folder of the CIFAR files")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=1, help="run: trainings at once (each gets cores // parallel "
                        "threads); 2 runs a seed's bf16 and fp32 side by side")
    parser.add_argument("--out", type=Path, default=None, help="report: write the Markdown here as well")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args)
    text = report(args)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

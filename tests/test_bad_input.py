"""Bad invocations of train.py and `python -m selectscale.experiments`, as a user types them: each must exit
with status 2 and ONE line on stderr (blank lines and Python warnings aside) naming the key, the bad value and
what is allowed, and must write nothing (no new run directory; an existing run directory keeps every file,
size and mtime). Run with `-s` to see the table of actual messages (docs/reliability.md lists them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fault_helpers import ENV, REPO, dir_state, message_lines, run_train
from hydra import compose, initialize_config_dir

from selectscale.engine import fit, register_configs
from selectscale.engine import steps as engine_steps
from selectscale.engine.signals import Preempted

pytestmark = pytest.mark.slow  # about 30 subprocesses, each importing torch: well over a minute on 2 cores
register_configs()

# Every train.py case starts from this tiny valid run; a case's overrides replace keys of the same name.
BASE = ["dataset=synthetic", "dataset.train_size=32", "dataset.test_size=16", "trainer.batch_size=16",
        "trainer.epochs=2", "schedule.lr=0.1", "trainer.device=cpu", "trainer.progress_bar=false"]


@dataclass(frozen=True)
class Case:
    """One bad invocation. ``args`` and ``fragments`` may hold ``{tmp}`` (this case's scratch folder) and
    ``{run}`` (its run directory). A fragment that is a tuple is satisfied by any of its strings."""

    id: str
    args: tuple[str, ...]
    fragments: tuple  # what the one line must name: the key, the bad value, what is allowed
    tool: str = "train"  # train | experiments
    env: dict = field(default_factory=dict)
    existing: str | None = None  # "finished" | "unfinished": {run} is a copy of such a run directory
    setup: str | None = None  # a named preparation, see prepare()
    skip_as_root: bool = False


CASES = [
    Case("unknown-model", ("model=resnet99",), ("model", "resnet99", "resnet20")),
    Case("unknown-model-name", ("model.name=resnet99",), ("model.name", "resnet99", "resnet20")),
    Case("unknown-drop", ("drop=dropconnect",), ("drop", "dropconnect", "selectscale")),
    Case("unknown-dataset", ("dataset=mnist",), ("dataset", "mnist", "cifar10")),
    Case("top-rate-above-1", ("drop=selectscale", "drop.top_rate=1.5"), ("drop.top_rate", "1.5", "[0.0, 1.0]")),
    Case("retain-rate-negative", ("drop=dropout", "drop.retain_rate=-0.1"),
         ("drop.retain_rate", "-0.1", "[0.0, 1.0]")),
    Case("selectout-drops-more-than-top", ("drop=selectout", "drop.top_rate=0.05"),
         ("drop.retain_rate", "0.9", "1 - retain_rate <= top_rate")),
    Case("validation-fraction-one", ("dataset.validation_fraction=1.0",),
         ("dataset.validation_fraction", "1.0", "[0, 1)")),
    Case("validation-split-of-imagenet", ("dataset=imagenet", "dataset.root={tmp}", "dataset.validation_fraction=0.2"),
         ("dataset.validation_fraction", "0.2", "cifar10, cifar100 and synthetic")),
    Case("lr-zero", ("schedule.lr=0",), ("schedule.lr", "0", "(0.0, 100.0]")),
    Case("lr-negative", ("schedule.lr=-0.1",), ("schedule.lr", "-0.1", "(0.0, 100.0]")),
    Case("epochs-zero", ("trainer.epochs=0",), ("trainer.epochs", "0", ">= 1")),
    Case("batch-not-divisible-by-world-size", ("trainer.batch_size=16",),
         ("trainer.batch_size", "16", "divisible by the 3 processes"), env={"WORLD_SIZE": "3"}),
    Case("milestones-not-increasing", ("schedule.milestones=[0.6,0.3]",),
         ("schedule.milestones", "[0.6, 0.3]", "strictly increasing")),
    Case("milestones-beyond-the-run", ("schedule.milestones=[0.5,1.5]",),
         ("schedule.milestones", "1.5", "inside (0, 1)")),
    Case("misspelt-key", ("trainer.epoch=3",), ("trainer.epoch", "3", ("trainer.epochs", "--cfg job"))),
    Case("wrong-type", ("trainer.epochs=abc",), ("trainer.epochs", "abc", ("int", "Int"))),
    Case("data-root-missing", ("dataset=cifar10", "dataset.root={tmp}/no-such-folder"),
         ("dataset.root", "{tmp}/no-such-folder", "does not exist")),
    Case("snapshot-epoch-beyond-the-run", ("trainer.snapshot_epochs=[5]",),
         ("trainer.snapshot_epochs", "[5]", "1..2")),
    Case("run-dir-under-a-file", ("hydra.run.dir={tmp}/blocker/run",),
         ("{tmp}/blocker/run", "is a file, not a folder", "hydra.run.dir"), setup="blocker"),
    Case("output-dir-under-a-file", ("output_dir={tmp}/blocker/run", "hydra.run.dir={tmp}/hydra"),
         ("{tmp}/blocker/run", ("not writable", "is a file, not a folder"), "output_dir"), setup="blocker+hydra"),
    Case("run-dir-read-only", ("hydra.run.dir={tmp}/read-only/run",),
         ("{tmp}/read-only/run", "not writable", "hydra.run.dir"), setup="read-only", skip_as_root=True),
    Case("output-dir-leaves-no-hydra-dir", ("trainer.epochs=0", "output_dir={tmp}/out", "hydra.run.dir={tmp}/hydra"),
         ("trainer.epochs", "0", ">= 1")),
    Case("resume-unfinished-with-other-lr", ("trainer.resume=auto", "schedule.lr=0.05"),
         ("schedule.lr", "0.05", "0.1"), existing="unfinished"),
    Case("resume-finished-with-other-lr", ("trainer.resume=auto", "schedule.lr=0.05"),
         ("schedule.lr", "0.05", "0.1"), existing="finished"),
    Case("second-run-into-a-complete-run", (), ("{run}", "complete run", "choose another directory"),
         existing="finished"),
    Case("new-run-into-an-unfinished-run", (), ("{run}", "unfinished run", "trainer.resume=auto"),
         existing="unfinished"),
    # Issue 13: values torch or the schedule cannot use, devices that are not there, batches that do not fit.
    Case("lr-nan", ("schedule.lr=nan",), ("schedule.lr", "nan", "finite")),
    Case("lr-infinite", ("schedule.lr=inf",), ("schedule.lr", "inf", "finite")),
    Case("curriculum-ramp-nan", ("curriculum=linear", "curriculum.ramp_fraction=nan"),
         ("curriculum.ramp_fraction", "nan", "finite")),
    Case("seed-beyond-int64", ("seed=18446744073709551616",), ("seed", "18446744073709551616", "64-bit")),
    Case("cuda-without-a-gpu", ("trainer.device=cuda",), ("trainer.device", "cuda", "0 CUDA device")),
    Case("batch-larger-than-the-training-set", ("trainer.batch_size=64",),
         ("trainer.batch_size=64", "larger than the training set", "32 images")),
    Case("bad-value-and-missing-data", ("dataset=cifar10", "dataset.root={tmp}/no-such-folder",
                                        "drop=selectscale", "drop.top_rate=1.5"), ("drop.top_rate", "1.5")),
    Case("new-run-inside-a-run", ("hydra.run.dir={run}/inner",), ("{run}/inner", "inside the run directory {run}"),
         existing="finished"),
    Case("run-dir-non-ascii-unquoted", ("hydra.run.dir={tmp}/ünï",), ("hydra.run.dir", "cannot parse", "quote it")),
    Case("run-dir-bad-interpolation", ("hydra.run.dir={tmp}/${nope}",), ("hydra.run.dir", "nope", "interpolation")),
    Case("run-dir-dangling-link", ("hydra.run.dir={tmp}/dangling",), ("{tmp}/dangling", "does not exist"),
         setup="dangling"),
    Case("report-without-runs", ("report", "table1", "--runs", "{tmp}/runs", "--out", "{tmp}/results"),
         ("table1", "{tmp}/runs", "make table1"), tool="experiments", setup="empty-runs"),
    Case("report-other-schema-version", ("report", "table1", "--runs", "{tmp}/runs", "--out", "{tmp}/results"),
         ("schema_version", "2", ("only 1", "supported: 1")), tool="experiments", setup="schema-2"),
    Case("experiments-zero-seeds", ("run", "table1", "--seeds", "0", "--runs", "{tmp}/runs", "--out",
                                    "{tmp}/results"), ("--seeds", "0", ">= 1"), tool="experiments"),
]
MESSAGES: dict[str, tuple[str, int, str]] = {}  # case id -> (command, exit status, stderr message lines)


def merge(base: list[str], overrides: tuple[str, ...]) -> list[str]:
    """``base`` with each override replacing the entry of the same key (Hydra refuses a group given twice)."""
    merged = {arg.split("=", 1)[0]: arg for arg in base}
    merged.update({arg.split("=", 1)[0]: arg for arg in overrides})
    return list(merged.values())


def make_cfg(run_dir: Path):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=[*BASE, f"output_dir={run_dir}"])


@pytest.fixture(scope="module")
def existing_runs(tmp_path_factory) -> dict[str, Path]:
    """A finished run and an unfinished one (stopped by SIGTERM in epoch 2), trained in-process with BASE."""
    root = tmp_path_factory.mktemp("existing")
    fit(make_cfg(root / "finished"))
    original, calls = engine_steps._train_step, {"n": 0}

    def step_then_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_steps, "_train_step", step_then_signal)
        with pytest.raises(Preempted):
            fit(make_cfg(root / "unfinished"))
    assert json.loads((root / "unfinished" / "result.json").read_text())["complete"] is False
    return {"finished": root / "finished", "unfinished": root / "unfinished"}


def prepare(case: Case, tmp: Path) -> None:
    if case.setup in ("blocker", "blocker+hydra"):
        (tmp / "blocker").write_text("a file, not a folder")
    if case.setup == "blocker+hydra":
        (tmp / "hydra").mkdir()  # Hydra's own directory, already there: its content must stay as it is (empty)
    if case.setup == "read-only":
        (tmp / "read-only").mkdir()
        (tmp / "read-only").chmod(0o555)
    if case.setup == "dangling":
        (tmp / "dangling").symlink_to(tmp / "nowhere")
    if case.setup == "empty-runs":
        (tmp / "runs").mkdir()
    if case.setup == "schema-2":
        from report_fixtures import make_result, write_run

        write_run(tmp / "runs" / "table1" / "wrn20_8-selectscale", "seed0", make_result(schema_version=2))


def fill(text: str, tmp: Path, run: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{run}", str(run))


@pytest.fixture(scope="module", autouse=True)
def print_message_table():
    """After the module: the Markdown table of every case's command, exit status and message (`-s`)."""
    yield
    print("\n\n| case | command | exit code | message (actual) |\n|---|---|---|---|")
    for case in CASES:
        if case.id in MESSAGES:
            command, code, message = MESSAGES[case.id]
            print(f"| {case.id} | `{command}` | {code} | {message.replace('|', '/')} |")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_invocation_is_one_line_exit_2_and_writes_nothing(case, tmp_path, request):
    """The case's command exits with status 2, prints one line naming the key, the bad value and what is
    allowed, and leaves the file system as it was."""
    if case.skip_as_root and os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop root")
    run = tmp_path / "run"
    if case.existing:
        shutil.copytree(request.getfixturevalue("existing_runs")[case.existing], run)
    prepare(case, tmp_path)
    args = [fill(arg, tmp_path, run) for arg in case.args]
    before = dir_state(tmp_path)
    if case.tool == "train":
        placed = [] if any(a.startswith("hydra.run.dir=") for a in args) else [f"hydra.run.dir={run}"]
        argv = merge(BASE, (*args, *placed))
        done = run_train(argv, env={**ENV, **case.env}, timeout=180)
        shown = "python train.py " + " ".join(a for a in argv if a not in BASE)
    else:
        done = subprocess.run([sys.executable, "-m", "selectscale.experiments", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=180, env=ENV)
        shown = "python -m selectscale.experiments " + " ".join(args)
    if case.setup == "read-only":
        (tmp_path / "read-only").chmod(0o755)
    lines = message_lines(done.stderr)
    env = " ".join(f"{k}={v}" for k, v in case.env.items())
    shown = (f"{env} {shown}" if env else shown).replace(str(tmp_path), "<tmp>")
    MESSAGES[case.id] = (shown, done.returncode, " ⏎ ".join(lines).replace(str(tmp_path), "<tmp>")[:400])
    print(f"\n[{case.id}] exit {done.returncode}: {MESSAGES[case.id][2]}")

    assert done.returncode == 2, f"exit {done.returncode}, stderr:\n{done.stderr[-2000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n" + "\n".join(lines)
    for fragment in case.fragments:
        options = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(fill(option, tmp_path, run) in lines[0] for option in options), \
            f"{' or '.join(map(repr, options))} missing from: {lines[0]}"
    after = dir_state(tmp_path)
    assert after == before, f"written: {sorted(set(after.items()) ^ set(before.items()))}"

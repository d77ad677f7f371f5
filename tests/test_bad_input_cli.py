"""Issue 32, item 4: bad input to train.py that gave a traceback, several lines, or was silently accepted. Each
case asserts the exit status, ONE line on stderr (``error: ...``) without a traceback, naming the problem and the
fix, and that nothing appeared under the case's scratch folder (no run directory, no Hydra output folder).

In-process (``selectscale.train.run()`` with a patched ``sys.argv``) wherever the behaviour does not need
another process: one subprocess (the joblib sweep, marked slow) needs worker processes anyway.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fault_helpers import ENV, REPO, dir_state, message_lines
from hydra import compose, initialize_config_dir

import selectscale.argv_checks as argv_checks
import selectscale.data.loader as data_loader
import selectscale.train as train_module
from selectscale.argv_checks import composition_error, run_dir_error
from selectscale.data import DeviceLoader, build_dataset
from selectscale.data import memory as data_memory
from selectscale.engine import register_configs
from selectscale.errors import ConfigError
from selectscale.failures import SweepRecord

register_configs()
CONFIGS = REPO / "configs"
# A tiny valid run: a case's arguments come after these (a case never repeats one of their keys).
BASE = ["dataset=synthetic", "dataset.train_size=32", "dataset.test_size=16", "trainer.batch_size=16",
        "trainer.epochs=1", "model=resnet8", "trainer.device=cpu", "trainer.progress_bar=false"]
UNSET = "SELECTSCALE_TEST_UNSET_VARIABLE"


def train_in_process(args: list[str], tmp_path: Path, monkeypatch, capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``python train.py BASE ARGS`` run in this process, from ``tmp_path``, with the
    run directory in ``tmp_path`` unless ``args`` place it."""
    placed = any(a.startswith(("hydra.run.dir=", "output_dir=")) for a in args)
    monkeypatch.chdir(tmp_path)  # a relative default (runs/<date>/...) would land here, never in the repository
    monkeypatch.setattr(sys, "argv", ["train.py", *BASE, *args, *([] if placed else [f"hydra.run.dir={tmp_path}/run"])])
    status = train_module.run()
    return status, capsys.readouterr().err


def assert_one_line(status: int, stderr: str, *fragments: str, expected_status: int = 2) -> str:
    lines = message_lines(stderr)
    assert status == expected_status, f"exit {status}, stderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), "\n".join(lines)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from: {lines[0]}"
    return lines[0]


def refused_in_process(args: list[str], tmp_path: Path, monkeypatch, capsys, *fragments: str) -> str:
    """Run ``args``, check the one-line refusal, and that nothing was written under ``tmp_path``."""
    before = dir_state(tmp_path)
    status, stderr = train_in_process(args, tmp_path, monkeypatch, capsys)
    line = assert_one_line(status, stderr, *fragments)
    after = dir_state(tmp_path)
    assert after == before, f"written: {sorted(set(after) ^ set(before))}"
    return line


# --- 1. an ${oc.env:VAR} whose variable is not set ---------------------------------------------------------


def test_an_unset_environment_variable_is_named_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(UNSET, raising=False)
    refused_in_process([f"dataset.root=${{oc.env:{UNSET}}}"], tmp_path, monkeypatch, capsys,
                       "dataset.root", f"the environment variable {UNSET} is not set", f"export {UNSET}=",
                       f"${{oc.env:{UNSET},DEFAULT}}")


def test_an_unset_environment_variable_in_the_run_dir_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(UNSET, raising=False)
    refused_in_process([f"hydra.run.dir={tmp_path}/${{oc.env:{UNSET}}}"], tmp_path, monkeypatch, capsys,
                       "hydra.run.dir", f"{UNSET} is not set")


def test_an_environment_variable_that_is_set_or_has_a_default_passes(monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)
    assert composition_error([f"dataset.root=${{oc.env:{UNSET},data}}"], CONFIGS) is None
    monkeypatch.setenv(UNSET, "data")
    assert composition_error([f"dataset.root=${{oc.env:{UNSET}}}"], CONFIGS) is None


# --- 2. a misspelt option of one of Hydra's own groups ---------------------------------------------------


def test_a_misspelt_launcher_lists_the_installed_launchers(tmp_path, monkeypatch, capsys):
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):  # what is installed, Hydra's look-up
        launchers = GlobalHydra.instance().config_loader().get_group_options("hydra/launcher")
    line = refused_in_process(["hydra/launcher=jobllib"], tmp_path, monkeypatch, capsys,
                              "hydra/launcher=jobllib", "no such option", ", ".join(launchers))
    if "joblib" in launchers:
        assert "did you mean hydra/launcher=joblib?" in line


@pytest.mark.parametrize("argv, expected", [
    (["-m", "seed=0,1", "hydra/launcher=basic,nope"], "hydra/launcher=nope: no such option of hydra/launcher"),
    (["hydra/sweeper=nope"], "hydra/sweeper=nope: no such option of hydra/sweeper; the options installed here are "
                             "basic"),
    (["hydra/lancher=joblib"], "hydra/lancher=joblib: Hydra has no config group hydra/lancher; did you mean "
                               "hydra/launcher?"),
    (["drop=selectscal"], "drop=selectscal: no such option in configs/drop/; choose one of"),
    (["schedule=cosin"], "schedule=cosin: no such option in configs/schedule/"),
    (["curriculum=linar"], "curriculum=linar: no such option in configs/curriculum/"),
    (["trainer=fast"], "trainer=fast: no such option in configs/trainer/"),
    (["dataset=cifar1O"], "dataset=cifar1O: no such option in configs/dataset/"),
    (["+experiment=table9"], "+experiment=table9: no such option in configs/experiment/"),
], ids=["launcher-sweep", "sweeper", "hydra-group", "drop", "schedule", "curriculum", "trainer", "dataset",
        "experiment"])
def test_a_misspelt_group_option_is_one_line(argv, expected):
    message = composition_error(argv, CONFIGS)
    assert message is not None and message.startswith(expected) and "\n" not in message, message


# --- 3. keys added with + that the schema does not declare ----------------------------------------------


@pytest.mark.parametrize("override, group, close", [
    ("+trainer.some_typo=3", "trainer", None),
    ("+drop.foo=1", "drop", None),
    ("+model.bar=2", "model", None),
    ("+dataset.x=1", "dataset", None),
    ("+schedule.y=1", "schedule", None),
    ("+curriculum.z=1", "curriculum", None),
    ("++trainer.epoch=3", "trainer", "trainer.epochs"),
    ("+seeds=3", "the config's top level", "seed"),
])
def test_a_key_added_with_plus_must_be_declared(override, group, close):
    message = composition_error([override], CONFIGS)
    key = override.lstrip("+").split("=")[0].split(".")[-1]
    assert message.startswith(f"{override}: {group} has no key {key!r}") and "\n" not in message, message
    assert "a key added with + must be one the schema declares" in message and "its keys are" in message
    if close:
        assert f"did you mean {close}" in message


def test_an_added_key_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    refused_in_process(["+trainer.some_typo=3"], tmp_path, monkeypatch, capsys, "+trainer.some_typo=3",
                       "no key 'some_typo'", "epochs, batch_size")


def test_group_selections_and_hydra_overrides_still_pass():
    assert composition_error(["+experiment=table1_wrn20_4_selectscale", "seed=3", "hydra.job.chdir=false",
                              "hydra/launcher=basic", "hydra.sweep.dir=x"], CONFIGS) is None
    assert composition_error(["-m", "+experiment=table1_wrn20_4_selectscale,table1_wrn20_8_selectscale"],
                             CONFIGS) is None


def test_a_group_may_allow_extra_keys(monkeypatch):
    from selectscale.engine import schema

    monkeypatch.setattr(schema, "EXTRA_KEYS_ALLOWED", frozenset({"model"}))
    assert schema.undeclared_key("model.anything") is None
    assert schema.undeclared_key("drop.anything") is not None


# --- 5. a training set too large for memory ----------------------------------------------------------------


def test_a_training_set_that_does_not_fit_is_one_line_and_leaves_no_run_dir(tmp_path, monkeypatch, capsys):
    """The device-resident loader's allocation fails (MemoryError): ConfigError, exit 2, and neither the run
    directory (output_dir) nor Hydra's folder is left behind."""
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(data_loader, "_place", no_memory)
    refused_in_process([f"output_dir={tmp_path}/out", f"hydra.run.dir={tmp_path}/hydra"], tmp_path, monkeypatch,
                       capsys, "the training set (32 images", "does not fit in host memory",
                       "dataset.train_per_class", "dataset.train_size")


def loader_on(device: str) -> DeviceLoader:
    images, labels = torch.zeros(64, 3, 8, 8, dtype=torch.uint8), torch.zeros(64, dtype=torch.int64)
    return DeviceLoader(images, labels, 8, train=True, seed=0, mean=(0.5,) * 3, std=(0.2,) * 3, device=device,
                        padding=1)


@pytest.mark.parametrize("failure", [MemoryError(), torch.cuda.OutOfMemoryError("CUDA out of memory")],
                         ids=["MemoryError", "OutOfMemoryError"])
def test_memory_failures_of_the_allocation_become_config_errors(monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(data_loader, "_place", fail)
    with pytest.raises(ConfigError, match=r"the training set \(64 images, 0\.0 MiB\) does not fit in host memory: "
                                          r"use fewer training images"):
        loader_on("cpu")


def test_another_runtime_error_of_the_allocation_is_not_hidden(monkeypatch):
    """A plain RuntimeError counts as out of memory only when the set needs more than the memory available."""
    def fail(*args, **kwargs):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(data_loader, "_place", fail)
    with pytest.raises(RuntimeError, match="some other failure"):
        loader_on("cpu")
    monkeypatch.setattr(data_memory, "_available", lambda device: 1000)  # 64 images of 192 bytes do not fit
    with pytest.raises(ConfigError, match="does not fit in host memory"):
        loader_on("cpu")


def test_a_set_larger_than_the_whole_device_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(data_memory, "_capacity", lambda device: 10 * (1 << 20))  # a 10 MiB "device"
    with pytest.raises(ConfigError, match=r"the synthetic data set \(10,000 images, 29\.4 MiB\) does not fit in host "
                                          r"memory: use a smaller dataset.train_size"):
        build_dataset("synthetic", num_train=9000, num_test=1000)
    build_dataset("synthetic", num_train=900, num_test=100)  # 2.9 MiB: fits


# --- 6. a joblib sweep with one bad job --------------------------------------------------------------------


def test_a_job_of_another_process_hands_its_record_over(tmp_path):
    worker = SweepRecord(jobs=1)
    worker.failed("sweep/r7", 2, ConfigError("drop.retain_rate=7.0 is invalid"))
    assert worker.hand_over(str(tmp_path), "job000001")
    done = SweepRecord(jobs=1)
    done.succeeded("sweep/r0.5", {"test_top1_error": 0.25})
    assert done.hand_over(str(tmp_path), "job000000")
    assert not SweepRecord().hand_over(str(tmp_path / "elsewhere"), "job000002")  # another machine's folder
    launcher = SweepRecord()
    launcher.take_over(str(tmp_path))
    assert launcher.jobs == 2 and launcher.status == 2
    assert [job for job, _, _ in launcher.outcomes] == ["sweep/r0.5", "sweep/r7"]
    assert launcher.failures == ["sweep/r7: exit 2: drop.retain_rate=7.0 is invalid"]


def test_a_job_that_cannot_hand_its_record_over_raises_without_a_traceback(monkeypatch):
    """Where the record folder is out of reach (submitit on other machines), the job raises JobFailed, a
    CompactHydraException: Hydra prints its message, not a traceback."""
    from hydra.errors import CompactHydraException
    from omegaconf import OmegaConf

    monkeypatch.setattr(train_module, "job_name", lambda: "job000000")
    monkeypatch.delenv(train_module.RECORDS_ENV, raising=False)
    cfg = OmegaConf.create({"output_dir": "/somewhere/run"})
    with pytest.raises(train_module.JobFailed, match="bad value") as raised:
        train_module.fail_job(cfg, SweepRecord(), 2, ConfigError("bad value"))
    assert isinstance(raised.value, CompactHydraException)


@pytest.mark.slow  # a subprocess and two joblib workers, each importing torch: ~10 s on 2 cores
def test_a_joblib_sweep_with_a_bad_job_runs_the_other_and_reports_it_in_one_line(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="hydra-joblib-launcher (the dev extra)")
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *BASE,
         "drop=dropout", "drop.retain_rate=0.5,7", f"hydra.sweep.dir={tmp_path}/sweep",
         "hydra.sweep.subdir=r${drop.retain_rate}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "HYDRA_FULL_ERROR" not in done.stderr, done.stderr[-3000:]
    assert (tmp_path / "sweep" / "r0.5" / "result.json").is_file()
    assert not (tmp_path / "sweep" / "r7.0").exists()
    lines = message_lines(done.stderr)
    summary = lines[lines.index("error: 1 of 2 jobs of this sweep failed (the others ran):"):]
    assert summary[1:] == [f"  {tmp_path}/sweep/r7.0: exit 2: drop.retain_rate=7.0 is invalid: allowed range is "
                           "[0.0, 1.0]"], lines
    assert "sweep of 2 jobs:" in done.stdout and "failed (exit 2)" in done.stdout
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("selectscale-sweep-*")
                if p.stat().st_mtime > tmp_path.stat().st_mtime]  # the record folder is removed


# --- 7. two jobs of one queue race on Hydra's date folder ---------------------------------------------------


def test_the_cleanup_tolerates_a_date_folder_removed_meanwhile(tmp_path, monkeypatch):
    date = tmp_path / "runs" / "2026-01-01"
    run = date / "12-00-00_run"
    run.mkdir(parents=True)
    original = train_module.remove_if_empty

    def and_another_process_removes_the_date_folder(folder):
        original(folder)
        if folder == run:
            date.rmdir()  # the other job of the queue cleans up first

    monkeypatch.setattr(train_module, "remove_if_empty", and_another_process_removes_the_date_folder)
    train_module.remove_own_empty_folders((run, date))
    assert not date.exists()


def test_the_cleanup_keeps_a_date_folder_filled_meanwhile(tmp_path, monkeypatch):
    date = tmp_path / "2026-01-01"
    run = date / "12-00-00_run"
    run.mkdir(parents=True)
    original = train_module.remove_if_empty

    def and_another_process_makes_its_run_folder(folder):
        original(folder)
        if folder == run:
            (date / "12-00-01_other").mkdir()

    monkeypatch.setattr(train_module, "remove_if_empty", and_another_process_makes_its_run_folder)
    train_module.remove_own_empty_folders((run, date))
    assert not run.exists() and (date / "12-00-01_other").is_dir()


def test_the_cleanup_tolerates_folders_that_vanish_between_calls(tmp_path, monkeypatch):
    """Between the stat and the removal: the folder is gone (FileNotFoundError from rmdir) or never existed."""
    folder = tmp_path / "gone"
    folder.mkdir()

    def removed_by_another_process(path):
        path.rmdir()
        path.rmdir()  # FileNotFoundError, as if it had vanished just before

    monkeypatch.setattr(train_module, "remove_if_empty", removed_by_another_process)
    train_module.remove_own_empty_folders((folder, tmp_path / "never-made", tmp_path / "never" / "made"))


# --- 8. run directories the file system refuses ------------------------------------------------------------


@pytest.mark.parametrize("key", ["output_dir", "hydra.run.dir"])
def test_a_folder_name_longer_than_the_file_system_allows_is_named(tmp_path, monkeypatch, capsys, key):
    long_name = "x" * 300
    refused_in_process([f"{key}={tmp_path}/{long_name}/run"], tmp_path, monkeypatch, capsys,
                       key, "xxxxxxxxxx...", "is 300 bytes", "longer than the 255 bytes", "ENAMETOOLONG",
                       f"choose a shorter {key}")


def test_a_path_longer_than_the_file_system_allows_is_named(tmp_path):
    deep = "/".join(["y" * 200] * 21)  # 4,200 bytes: every name fits, the path does not
    message = run_dir_error([f"output_dir={tmp_path}/{deep}"])
    assert "the path is" in message and "ENAMETOOLONG" in message and "\n" not in message


def test_a_sweep_whose_job_folder_would_be_too_long_is_one_line():
    """The default hydra.sweep.subdir names every override of the job: a long string value makes the folder name
    of that job too long, which Hydra met only when making it (a traceback, the sweep stopped)."""
    argv = ["-m", "seed=0,1", "drop.score=max," + "m" * 250]
    message = composition_error(argv, CONFIGS)
    assert message.startswith("the folder of the sweep's job with the longest values") and "\n" not in message
    assert "is 268 bytes, longer than the 255 bytes" in message and "hydra.sweep.subdir=${hydra.job.num}" in message
    assert composition_error([*argv, "hydra.sweep.subdir=${hydra.job.num}"], CONFIGS) is None


def test_a_run_dir_under_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "blocker").write_text("a file")
    refused_in_process([f"hydra.run.dir={tmp_path}/blocker/run"], tmp_path, monkeypatch, capsys,
                       f"{tmp_path}/blocker is a file, not a folder", "choose another hydra.run.dir")


@pytest.mark.parametrize("key", ["output_dir", "hydra.run.dir"])
def test_a_read_only_parent_is_one_line(tmp_path, monkeypatch, capsys, key):
    """Permissions do not stop root (the tests may run as root): os.access is made to say what it says for
    anyone else, and the check must name the folder."""
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    real_access = os.access
    monkeypatch.setattr(argv_checks.os, "access",
                        lambda path, mode: False if Path(path) == parent else real_access(path, mode))
    try:
        refused_in_process([f"{key}={parent}/run"], tmp_path, monkeypatch, capsys,
                           f"{parent} is not writable", f"choose another {key}")
    finally:
        parent.chmod(0o755)


def test_a_read_only_file_system_is_one_line(tmp_path, monkeypatch):
    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(argv_checks.os, "statvfs", lambda path: ReadOnly())
    assert run_dir_error([f"hydra.run.dir={tmp_path}/run"]) == (
        f"hydra.run.dir={tmp_path}/run: {tmp_path} is on a read-only file system; choose another hydra.run.dir")


def test_an_unexpected_file_system_error_while_checking_is_one_line(tmp_path, monkeypatch):
    def refuse(path, mode):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(argv_checks.os, "access", refuse)
    message = run_dir_error([f"output_dir={tmp_path}/run"])
    assert message == (f"output_dir={tmp_path}/run: {tmp_path} cannot be used (Permission denied); "
                       "choose another output_dir")


def test_valid_run_dirs_pass(tmp_path):
    assert run_dir_error([f"hydra.run.dir={tmp_path}/a/b", f"output_dir={tmp_path}/c",
                          "hydra.sweep.dir=${now:%H}"], CONFIGS) is None


# --- the same checks inside the job (a config composed without train.py's command-line checks) --------------


def test_validate_names_an_unset_environment_variable(monkeypatch):
    from selectscale.engine import validate

    monkeypatch.delenv(UNSET, raising=False)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*BASE, f"dataset.root=${{oc.env:{UNSET}}}"])
    with pytest.raises(ConfigError, match=f"dataset.root=.*the environment variable {UNSET} is not set"):
        validate(cfg)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*BASE, "dataset.root=${nowhere.key}"])
    with pytest.raises(ConfigError, match=r"dataset.root='\$\{nowhere.key\}': its \$\{...\} interpolation does not "
                                          r"resolve \(InterpolationKeyError\)"):
        validate(cfg)

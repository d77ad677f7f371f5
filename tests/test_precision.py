"""trainer.precision (issue 35): auto = bf16 where the CPU has native bf16 (or the GPU supports it), fp32 where not;
the choice and its reason logged once and recorded; a resumed run keeps its own; old runs read as they trained;
what autocast runs in bf16 and what stays fp32; a table refuses to mix precisions."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from report_fixtures import make_result, write_run

import selectscale.engine.trainer as engine_trainer
from selectscale.engine import ConfigError, fit, register_configs
from selectscale.engine.config import resolve_precision, validate
from selectscale.engine.steps import autocast, autocast_device
from selectscale.models import create_model
from selectscale.report.collect import read_row
from selectscale.report.specs import ExperimentError
from selectscale.report.table_files import refuse_mixed_precisions
from selectscale.runs import directory as rundir
from selectscale.runs import result as run_result
from selectscale.runs.history import complete_config, with_added_keys

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()
TINY = ["dataset=synthetic", "dataset.train_size=64", "dataset.test_size=32", "model=resnet8", "trainer.batch_size=32",
        "trainer.epochs=1", "trainer.device=cpu", "trainer.progress_bar=false", "trainer.deterministic=true"]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture(params=["native", "emulated"])
def cpu_kind(request, monkeypatch):
    """This CPU as one with native bf16, or without (forced through the environment variable)."""
    monkeypatch.setenv(run_result.NATIVE_BF16_ENV, "1" if request.param == "native" else "0")
    return request.param


def test_the_default_is_auto():
    assert make_cfg().trainer.precision == "auto"


def test_native_bf16_is_onednns_check_unless_forced(monkeypatch):
    monkeypatch.delenv(run_result.NATIVE_BF16_ENV, raising=False)
    assert run_result.native_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    for value, expected in (("1", True), ("0", False)):
        monkeypatch.setenv(run_result.NATIVE_BF16_ENV, value)
        assert run_result.native_bf16() is expected
    monkeypatch.setenv(run_result.NATIVE_BF16_ENV, "maybe")  # not a forcing value: detect
    assert run_result.native_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_auto_on_the_cpu_is_bf16_only_with_native_bf16(cpu_kind):
    precision = resolve_precision(make_cfg().trainer, CPU)
    model = run_result.cpu_model()[0]
    if cpu_kind == "native":
        assert precision.value == "bf16" and precision.reason.startswith(f"auto: native bf16 on {model}")
    else:
        assert precision.value == "fp32" and precision.reason.startswith(f"auto: no native bf16 on {model}")
    assert "SELECTSCALE_NATIVE_BF16" in precision.reason  # says it was forced
    assert autocast_device(make_cfg(), CPU) == ("cpu" if cpu_kind == "native" else None)


@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_an_explicit_precision_is_taken_as_asked_on_any_cpu(cpu_kind, asked):
    precision = resolve_precision(make_cfg(f"trainer.precision={asked}").trainer, CPU)
    assert (precision.value, precision.reason) == (asked, f"trainer.precision={asked}")
    assert autocast_device(make_cfg(f"trainer.precision={asked}"), CPU) == ("cpu" if asked == "bf16" else None)


def test_the_older_switches_speak_through_auto_and_may_not_contradict(cpu_kind):
    assert resolve_precision(make_cfg("trainer.cpu_amp=true").trainer, CPU).value == "bf16"  # even emulated
    with pytest.raises(ConfigError, match=r"trainer.cpu_amp=True is invalid: .*trainer.precision=fp32"):
        resolve_precision(make_cfg("trainer.cpu_amp=true", "trainer.precision=fp32").trainer, CPU)
    assert resolve_precision(make_cfg("trainer.amp=false").trainer, CPU).value == (
        "bf16" if cpu_kind == "native" else "fp32")  # amp is CUDA's switch


@pytest.mark.parametrize("supported", [True, False])
def test_auto_on_cuda_follows_the_gpus_bf16_support(monkeypatch, supported):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "FakeGPU")
    precision = resolve_precision(make_cfg().trainer, CUDA)
    assert (precision.value, precision.reason) == (("bf16", "auto: bf16 supported on FakeGPU") if supported else
                                                   ("fp32", "auto: no bf16 on FakeGPU"))
    assert resolve_precision(make_cfg("trainer.amp=false").trainer, CUDA).value == "fp32"
    with pytest.raises(ConfigError, match="trainer.amp=False is invalid"):
        resolve_precision(make_cfg("trainer.amp=false", "trainer.precision=bf16").trainer, CUDA)


def test_a_kept_precision_wins_over_auto_only():
    trainer = make_cfg().trainer
    assert resolve_precision(trainer, CPU, kept="fp32").value == "fp32"
    assert resolve_precision(trainer, CPU, kept="bf16").reason == "auto: kept from the run being resumed"
    assert resolve_precision(make_cfg("trainer.precision=fp32").trainer, CPU, kept="bf16").value == "fp32"


def test_a_bad_precision_is_one_line():
    with pytest.raises(ConfigError, match=r"trainer.precision='fp16' is invalid: use one of auto, fp32, bf16"):
        validate(make_cfg(*TINY, "trainer.precision=fp16"))


def test_a_run_logs_its_precision_once_and_records_it(tmp_path, caplog, cpu_kind):
    caplog.set_level(logging.INFO, logger="selectscale")
    run_dir = tmp_path / "run"
    result = fit(make_cfg(*TINY, f"output_dir={run_dir}"))
    expected = "bf16" if cpu_kind == "native" else "fp32"
    lines = [message for message in caplog.messages if message.startswith("precision: ")]
    assert len(lines) == 1 and lines[0].startswith(f"precision: {expected} (auto: ")
    assert f"] {lines[0]}" in (run_dir / "train.log").read_text()
    assert OmegaConf.load(run_dir / "config.yaml").trainer.precision == expected
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["precision"] == result["precision"] == saved["config"]["trainer"]["precision"] == expected
    assert saved["precision_reason"] == lines[0].split(" (", 1)[1][:-1]


def test_explicit_bf16_on_a_cpu_without_native_bf16_warns(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv(run_result.NATIVE_BF16_ENV, "0")
    real = engine_trainer.environment
    monkeypatch.setattr(engine_trainer, "environment", lambda: {**real(), "cpu_native_bf16": False,
                                                                "cpu_model": "OldCPU"})
    caplog.set_level(logging.WARNING, logger="selectscale")
    fit(make_cfg(*TINY, f"output_dir={tmp_path / 'run'}", "trainer.precision=bf16"))
    assert sum("without native bf16 (OldCPU)" in message for message in caplog.messages) == 1


def test_a_resumed_run_keeps_its_precision_on_another_cpu(tmp_path, monkeypatch, caplog):
    """Started in bf16 on a CPU with native bf16, interrupted, resumed with auto where bf16 is emulated: bf16."""
    from test_engine_fit import interrupt_at_step

    from selectscale.engine.signals import Preempted

    run_dir = tmp_path / "run"
    args = (*TINY, "trainer.epochs=2", f"output_dir={run_dir}")
    monkeypatch.setenv(run_result.NATIVE_BF16_ENV, "1")
    interrupt_at_step(monkeypatch, 3)
    with pytest.raises(Preempted):
        fit(make_cfg(*args))
    monkeypatch.undo()
    monkeypatch.setenv(run_result.NATIVE_BF16_ENV, "0")
    caplog.set_level(logging.INFO, logger="selectscale")
    result = fit(make_cfg(*args, "trainer.resume=auto"))
    assert result["complete"] and result["precision"] == "bf16"
    assert "precision: bf16 (auto: kept from the run being resumed)" in caplog.messages
    with pytest.raises(ConfigError, match=r"trainer.precision=fp32 \(saved: bf16\)"):  # asked otherwise: refused
        fit(make_cfg(*args, "trainer.resume=auto", "trainer.precision=fp32"))


def test_without_config_yaml_the_checkpoint_keeps_the_precision(tmp_path, monkeypatch):
    from test_engine_fit import interrupt_at_step

    from selectscale.engine.signals import Preempted

    run_dir = tmp_path / "run"
    args = (*TINY, "trainer.epochs=2", f"output_dir={run_dir}")
    monkeypatch.setenv(run_result.NATIVE_BF16_ENV, "0")  # starts in fp32
    interrupt_at_step(monkeypatch, 3)
    with pytest.raises(Preempted):
        fit(make_cfg(*args))
    monkeypatch.undo()
    (run_dir / "config.yaml").unlink()
    monkeypatch.setenv(run_result.NATIVE_BF16_ENV, "1")  # resumed where auto alone would pick bf16
    assert fit(make_cfg(*args, "trainer.resume=auto"))["precision"] == "fp32"


@pytest.mark.parametrize(("flat", "expected"), [
    ({"trainer.cpu_amp": True, "trainer.amp": True, "trainer.device": "auto"}, "bf16"),
    ({"trainer.cpu_amp": False, "trainer.amp": True, "trainer.device": "cpu"}, "fp32"),
    ({"trainer.cpu_amp": False, "trainer.amp": True, "trainer.device": "cuda"}, "bf16"),
    ({"trainer.cpu_amp": True, "trainer.amp": False, "trainer.device": "cuda:1"}, "fp32"),
    ({}, "fp32"),
    ({"trainer.device": "cuda"}, "fp32"),  # a record without trainer.amp: cpu_amp alone decides
])
def test_a_run_recorded_before_the_key_reads_as_it_trained(flat, expected):
    assert with_added_keys(flat)["trainer.precision"] == expected


def test_an_old_run_resumes_and_compares_as_it_trained(tmp_path, cpu_kind):
    """A config.yaml without trainer.precision (cpu_amp=false: fp32) resumes in fp32 even where auto picks bf16,
    and its settings equal those of a new fp32 run; its config completed for evaluation says fp32."""
    old = make_cfg(*TINY)
    container = OmegaConf.to_container(old, resolve=True)
    del container["trainer"]["precision"]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(container)))
    cfg = make_cfg(*TINY, "trainer.resume=auto", f"output_dir={tmp_path}")
    kept = engine_trainer._kept_precision(cfg, tmp_path)
    assert kept == "fp32" and resolve_precision(cfg.trainer, CPU, kept).value == "fp32"
    cfg.trainer.precision = "fp32"
    assert rundir.config_differences(OmegaConf.create(container), cfg) == []
    assert complete_config(OmegaConf.create(container)).trainer.precision == "fp32"
    cfg.trainer.precision = "bf16"
    assert rundir.config_differences(OmegaConf.create(container), cfg) == ["trainer.precision=bf16 (saved: fp32)"]


def test_under_bf16_autocast_convolutions_run_in_bf16_and_the_statistics_loss_and_update_stay_fp32():
    torch.manual_seed(0)
    model = create_model("resnet8", 10).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    seen = {}
    bn = next(module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d))
    conv = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, out: seen.update(conv_in=args[0].dtype, conv_out=out.dtype))
    bn.register_forward_hook(lambda module, args, out: seen.update(bn_in=args[0], bn_out=out.dtype))
    before = bn.running_mean.clone()
    with autocast("cpu"):
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    assert seen["conv_in"] == torch.float32 and seen["conv_out"] == torch.bfloat16  # the input is cast in the conv
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32  # cross-entropy on autocast's fp32 list
    assert seen["bn_in"].dtype == torch.bfloat16 and seen["bn_out"] == torch.bfloat16
    assert bn.running_mean.dtype == bn.running_var.dtype == bn.weight.dtype == torch.float32
    batch_mean = seen["bn_in"].float().mean(dim=(0, 2, 3))  # the statistics of the bf16 input, computed in fp32
    assert torch.allclose(bn.running_mean, 0.9 * before + 0.1 * batch_mean, atol=1e-6)
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(state["momentum_buffer"].dtype == torch.float32 for state in optimizer.state.values())


def _row(tmp_path: Path, name: str, precision: str | None, cpu: str = "Intel(R) Xeon(R) Processor"):
    overrides = {"config.trainer.device": "cpu", "environment": {"torch": "2.14.1", "torchvision": "0.29.1",
                                                                 "cpu_model": cpu, "cpu_native_bf16": True}}
    if precision is not None:
        overrides["config.trainer.precision"] = precision
    else:
        overrides["config.trainer.cpu_amp"] = False  # recorded before the key: fp32
    return read_row(write_run(tmp_path, name, make_result(0, **overrides)))


def test_a_table_refuses_to_mix_precisions_in_one_line(tmp_path):
    rows = [_row(tmp_path, "a", "bf16"), _row(tmp_path, "b", "fp32")]
    pattern = r"^t mixes precisions \(bf16: 1 run\(s\), e\.g\. .*/a; fp32: 1 run\(s\)"
    with pytest.raises(ExperimentError, match=pattern) as raised:
        refuse_mixed_precisions("t", rows)
    assert "\n" not in str(raised.value)
    refuse_mixed_precisions("t", [rows[1], _row(tmp_path, "old", None)])  # an old fp32 run is fp32
    refuse_mixed_precisions("t", [rows[0], _row(tmp_path, "amd", "bf16", cpu="AMD EPYC")])  # another CPU: allowed


def test_the_committed_precision_check_rerenders_byte_for_byte(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    committed = repo / "results" / "precision_check" / "README.md"
    if not committed.is_file():
        pytest.skip("results/precision_check/ is not committed in this checkout")
    done = subprocess.run([sys.executable, "scripts/precision_check.py", "report", "--out", str(tmp_path / "r.md")],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "r.md").read_bytes() == committed.read_bytes()

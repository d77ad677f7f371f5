"""Class activation maps (Zhou et al. 2016) for Figures 1 and 5: exactness, normalisation, the CLI end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from selectscale import figures
from selectscale.engine import fit, register_configs
from selectscale.figures.cam import cam_spread, class_activation_maps, normalise_maps, raw_class_activation_maps
from selectscale.models import create_model
from selectscale.runs.checkpoint import save_checkpoint

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()


class OneSpotNetwork(nn.Module):
    """Features that are zero except channel 0 at one location of an h x w grid: the CAM must peak there."""

    def __init__(self, spot: tuple[int, int], grid: int = 8) -> None:
        super().__init__()
        self.spot, self.grid = spot, grid
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 3.0], [-1.0, 1.0]]))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.zeros(images.shape[0], 2, self.grid, self.grid)
        features[:, 0, self.spot[0], self.spot[1]] = 1.0
        return features


def test_raw_maps_are_the_class_weighted_sum_of_the_features():
    torch.manual_seed(0)
    model = create_model("resnet20", 10).eval()
    images, classes = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    with torch.no_grad():
        features = model.features(images)
        raw = raw_class_activation_maps(features, model.fc.weight[classes])
        cams = class_activation_maps(model, images, classes)
    by_hand = torch.zeros(2, 8, 8)
    for b in range(2):
        for k in range(features.shape[1]):
            by_hand[b] += model.fc.weight[classes[b], k] * features[b, k]
    torch.testing.assert_close(raw, by_hand, rtol=1e-5, atol=1e-5)
    upsampled = F.interpolate(by_hand[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    low = upsampled.amin(dim=(1, 2), keepdim=True)
    expected = (upsampled - low) / (upsampled.amax(dim=(1, 2), keepdim=True) - low)
    torch.testing.assert_close(cams, expected, rtol=1e-5, atol=1e-5)
    assert cams.shape == (2, 32, 32) and not model.training


def test_a_1x1_feature_map_gives_the_dot_product_and_then_a_zero_map():
    features, weights = torch.randn(3, 5, 1, 1), torch.randn(3, 5)
    raw = raw_class_activation_maps(features, weights)
    torch.testing.assert_close(raw[:, 0, 0], (features[:, :, 0, 0] * weights).sum(1))
    model = OneSpotNetwork((0, 0), grid=1)
    cams = class_activation_maps(model, torch.zeros(3, 3, 16, 16), torch.tensor([0, 1, 2]))
    assert cams.shape == (3, 16, 16) and torch.equal(cams, torch.zeros(3, 16, 16))  # constant map -> zeros


@pytest.mark.parametrize("spot", [(0, 0), (2, 5), (7, 3)])
def test_a_single_active_location_makes_the_map_peak_there(spot):
    model = OneSpotNetwork(spot)
    cams = class_activation_maps(model, torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]))  # fc weights 2 and 0.5
    for cam in cams:
        row, col = divmod(int(cam.argmax()), 32)
        assert (row // 4, col // 4) == spot and float(cam.max()) == 1.0  # 8 x 8 -> 32 x 32: 4 pixels per cell
    inverted = class_activation_maps(model, torch.zeros(1, 3, 32, 32), torch.tensor([2]))[0]  # weight -1
    row, col = divmod(int(inverted.argmin()), 32)
    assert (row // 4, col // 4) == spot


def test_normalisation_and_spread():
    maps = torch.randn(4, 6, 7) * 10 + 3
    maps[2] = 5.0
    cams = normalise_maps(maps)
    assert cams.shape == (4, 6, 7) and float(cams.min()) >= 0.0 and float(cams.max()) <= 1.0
    for index in (0, 1, 3):
        assert float(cams[index].min()) == 0.0 and float(cams[index].max()) == 1.0
    assert torch.equal(cams[2], torch.zeros(6, 7))
    known = torch.tensor([[[0.0, 0.25], [0.5, 0.75]], [[0.1, 0.2], [0.3, 0.4]]])
    assert cam_spread(known).tolist() == [0.5, 0.0]  # 0.5 counts (>=)
    assert cam_spread(known, threshold=0.2).tolist() == [0.75, 0.75]


def train(run_dir: Path, drop: str, extra: list[str] = ()) -> Path:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128", "model=resnet20", f"drop={drop}",
            "trainer.batch_size=64", "trainer.epochs=2", "schedule=cosine", "trainer.device=cpu",
            "trainer.progress_bar=false", f"output_dir={run_dir}", *extra])
    fit(cfg)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cam")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: a second thread only waits, badly so when another process holds a core
    try:
        return (train(root / "none", "none"),
                train(root / "selectscale", "selectscale", ["trainer.snapshot_epochs=[1,2]"]))
    finally:
        torch.set_num_threads(threads)


def test_runs_side_by_side(runs, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["cam", *map(str, runs), "--labels", "a,b", "--out", str(out), "--count", "3", "--spread-images", "64"]
    assert figures.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cam.md", "cam.png"]
    assert (out / "cam.png").stat().st_size > 1000
    text = (out / "cam.md").read_text()
    assert all(f"`{run}`" in text for run in runs) and "over 64 evenly spaced test images" in text
    rows = [line for line in text.splitlines() if line.startswith(("| a |", "| b |"))]
    assert len(rows) == 2 and all(" ± " in row for row in rows)
    assert "selectscale (top_rate 0.2, retain_rate 0.1)" in text and "2 of 2" in text
    assert "the first 3 images of distinct classes in test-split order (--count 3): [" in text
    assert "python -m selectscale.figures cam" in text and "wrote" in capsys.readouterr().out


def test_snapshots_over_training(runs, tmp_path):
    out = tmp_path / "out"
    argv = ["cam", str(runs[1]), "--snapshots", "--name", "cam_epochs", "--out", str(out), "--images", "0,5",
            "--target", "predicted", "--spread-images", "32"]
    assert figures.main(argv) == 0
    assert (out / "cam_epochs.png").stat().st_size > 1000
    text = (out / "cam_epochs.md").read_text()
    assert "| epoch 1 |" in text and "| epoch 2 |" in text and "training split" in text
    assert "given with --images: [0, 5]" in text and "the class each network predicts" in text


def test_the_error_is_the_runs_own_test_error_on_the_whole_split(runs, tmp_path):
    # --spread-images beyond the split is capped: all 128 test images, so the error must be result.json's.
    out = tmp_path / "out"
    assert figures.main(["cam", str(runs[0]), "--out", str(out), "--count", "1", "--spread-images", "100000"]) == 0
    text = (out / "cam.md").read_text()
    error = 100 * float(OmegaConf.load(runs[0] / "result.json").test_top1_error)
    assert "over 128 evenly spaced test images" in text and f"| {error:.2f} |" in text


def imagenet_run(root: Path) -> Path:
    """A 2-class ImageNet folder of small JPEGs and an (untrained) ResNet-50 run directory on it."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            (root / "imagenet" / split / wnid).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (70 + 9 * i, 90, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "imagenet" / split / wnid / f"{i}.JPEG")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["dataset=imagenet", f"dataset.root={root / 'imagenet'}",
                                                      "drop=selectscale", "trainer.device=cpu"])
    run_dir = root / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(0)
    save_checkpoint({"model": create_model("resnet50", 2).state_dict()}, run_dir)
    return run_dir


def test_imagenet_resnet50_on_the_validation_split(tmp_path):
    out = tmp_path / "out"
    argv = ["cam", str(imagenet_run(tmp_path)), "--out", str(out), "--count", "2", "--spread-images", "3"]
    assert figures.main(argv) == 0
    text = (out / "cam.md").read_text()
    assert "imagenet, validation split" in text and "resnet50" in text and "[0, 2]" in text
    assert "over 3 evenly spaced validation images" in text and (out / "cam.png").stat().st_size > 1000


def mixed_data_run(run: Path, tmp_path: Path) -> Path:
    """A copy of ``run`` whose config says another synthetic set (other sizes: other images)."""
    copy = Path(shutil.copytree(run, tmp_path / "other"))
    cfg = OmegaConf.load(copy / "config.yaml")
    cfg.dataset.train_size = 512
    OmegaConf.save(cfg, copy / "config.yaml")
    return copy


@pytest.mark.parametrize("case, message", [
    ("empty", "holds no config.yaml: train a run there first"),
    ("index", "--images index 128 is out of range"),
    ("labels", "--labels has 1 labels for 2 runs"),
    ("mixed", "belongs to another run: it was trained with dataset.train_size=256 (config.yaml: 512)"),
    ("no_snapshots", "train with trainer.snapshot_epochs=[...]"),
])
def test_bad_input_is_a_one_line_error_and_writes_nothing(runs, tmp_path, capsys, case, message):
    out = tmp_path / "out"
    arguments = {
        "empty": [str(tmp_path)],
        "index": [str(runs[0]), "--images", "0,128"],
        "labels": [*map(str, runs), "--labels", "only one"],
        "mixed": [str(runs[0]), str(mixed_data_run(runs[1], tmp_path))],
        "no_snapshots": [str(runs[0]), "--snapshots"],
    }[case]
    assert figures.main(["cam", *arguments, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert not out.exists()

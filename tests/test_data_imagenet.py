"""ImageNet pipeline on a tiny ImageFolder of JPEGs written here: shapes, the validation crop, PCA lighting,
shards without padding, the bad-image policies, and the entry points."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from selectscale.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BadImageError,
    Lighting,
    build_dataset,
    build_imagenet_loaders,
    build_loaders,
    imagenet_val_transform,
    load_imagenet_folders,
)
from selectscale.data.imagenet import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, UnreadableImage

CLASSES = ("n01440764", "n01443537", "n01484850")
TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 3  # 12 training, 9 validation images


def write_jpeg(path, seed, size=(120, 90)):
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None]  # some structure under the noise
    pixels = np.clip(gradient + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for class_index, wnid in enumerate(CLASSES):
            (root / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                size = (120 + 17 * i, 90 + 11 * class_index)  # various sizes and aspect ratios
                write_jpeg(root / split / wnid / f"{wnid}_{i}.JPEG", seed=100 * class_index + i, size=size)
    return root


@pytest.fixture
def root_with_bad_jpeg(imagenet_root, tmp_path):
    """A copy of the tiny set where one training JPEG is cut after 300 bytes."""
    import shutil

    root = tmp_path / "imagenet"
    shutil.copytree(imagenet_root, root)
    bad = root / "train" / CLASSES[1] / f"{CLASSES[1]}_2.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])
    return root, bad


def test_train_and_val_batches_have_the_standard_shapes(imagenet_root):
    loaders = build_imagenet_loaders(imagenet_root, batch_size=4, workers=0, seed=0)
    assert (loaders.train.num_samples, loaders.val.num_samples) == (12, 9)
    assert tuple(loaders.train.loader.dataset.classes) == CLASSES
    train_batches, val_batches = list(loaders.train), list(loaders.val)
    assert [tuple(x.shape) for x, _ in train_batches] == [(4, 3, 224, 224)] * 3
    assert [tuple(x.shape) for x, _ in val_batches] == [(4, 3, 224, 224)] * 2 + [(1, 3, 224, 224)]
    images, labels = train_batches[0]
    assert images.dtype == torch.float32 and labels.dtype == torch.int64 and torch.isfinite(images).all()
    assert -3 < images.mean() < 3 and images.std() > 0.3  # normalised, not [0, 255]
    assert torch.cat([y for _, y in val_batches]).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # in folder order


def test_val_transform_resizes_to_256_and_keeps_the_central_224():
    width, height = 320, 256  # short side already 256: the resize keeps it, the crop drops 48 / 16 pixels
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, :, 0] = 255  # red border ...
    pixels[16:240, 48:272] = (0, 255, 0)  # ... around the exact central 224 x 224, in green
    out = imagenet_val_transform()(Image.fromarray(pixels))
    green = (torch.tensor([0.0, 1.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert out.shape == (3, 224, 224)
    torch.testing.assert_close(out, green.view(3, 1, 1).expand(3, 224, 224))
    wide = imagenet_val_transform()(Image.fromarray(np.zeros((300, 600, 3), np.uint8)))
    assert wide.shape == (3, 224, 224)


def test_lighting_adds_one_pca_colour_shift_per_image_with_the_alexnet_covariance():
    torch.manual_seed(0)
    shifts = Lighting(0.1)(torch.zeros(20_000, 3, 2, 2))
    assert torch.equal(shifts, shifts[:, :, :1, :1].expand_as(shifts))  # the same shift for every pixel
    eigvec, eigval = torch.tensor(IMAGENET_PCA_EIGVEC), torch.tensor(IMAGENET_PCA_EIGVAL)
    expected = eigvec @ torch.diag((0.1 * eigval) ** 2) @ eigvec.T  # Cov(eigvec (alpha * eigval))
    empirical = torch.cov(shifts[:, :, 0, 0].T)
    torch.testing.assert_close(empirical, expected, rtol=0.05, atol=2e-6)
    image = torch.rand(3, 5, 5)
    assert torch.equal(Lighting(0.0)(image), image)


def test_validation_shards_cover_every_image_once_without_padding(imagenet_root):
    shards = [build_imagenet_loaders(imagenet_root, 2, 0, rank, 2).val for rank in range(2)]
    indices = [list(loader.loader.sampler) for loader in shards]
    assert indices == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]
    assert [loader.num_samples for loader in shards] == [5, 4]
    assert sum(len(labels) for loader in shards for _, labels in loader) == 9


def test_training_shards_are_disjoint_and_reshuffled_per_epoch(imagenet_root):
    loaders = [build_imagenet_loaders(imagenet_root, 2, 0, rank, 2, seed=5).train for rank in range(2)]
    epoch0 = [list(loader.loader.sampler) for loader in loaders]
    assert len(set(epoch0[0]) | set(epoch0[1])) == 12 and all(len(shard) == 6 for shard in epoch0)
    assert [len(loader) for loader in loaders] == [3, 3]
    for loader in loaders:
        loader.set_epoch(1)
    assert [list(loader.loader.sampler) for loader in loaders] != epoch0


def test_bad_image_fail_policy_raises_naming_the_file(root_with_bad_jpeg):
    root, bad = root_with_bad_jpeg
    loaders = build_imagenet_loaders(root, batch_size=12, workers=0, on_bad_image="fail")
    with pytest.raises(BadImageError) as error:
        list(loaders.train)
    assert str(bad) in str(error.value) and "unreadable image" in str(error.value)


def test_bad_image_fail_policy_names_the_file_from_a_worker_process(root_with_bad_jpeg):
    root, bad = root_with_bad_jpeg
    loaders = build_imagenet_loaders(root, batch_size=6, workers=2, on_bad_image="fail")
    with pytest.raises(BadImageError) as error:
        list(loaders.train)
    assert str(error.value).startswith(f"{bad}: unreadable image (") and "\n" not in str(error.value)


def test_bad_image_policy_when_the_dataset_is_indexed_directly(root_with_bad_jpeg):
    root, bad = root_with_bad_jpeg
    failing, _ = load_imagenet_folders(root, on_bad_image="fail")
    index = [path for path, _ in failing.samples].index(str(bad))
    with pytest.raises(BadImageError, match="unreadable image"):
        failing[index]
    skipping, _ = load_imagenet_folders(root, on_bad_image="skip")
    assert isinstance(skipping[index], UnreadableImage) and skipping[index].path == str(bad)
    image, label = skipping[index - 1]
    assert image.shape == (3, 224, 224) and label == 1


def test_bad_image_skip_policy_counts_warns_and_keeps_the_rest(root_with_bad_jpeg):
    root, bad = root_with_bad_jpeg
    loaders = build_imagenet_loaders(root, batch_size=12, workers=0, on_bad_image="skip")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image") as record:
        batches = list(loaders.train)
    assert str(bad) in str(record[0].message)
    assert loaders.train.num_skipped == 1 and sum(len(labels) for _, labels in batches) == 11


def test_workers_give_the_same_augmented_batches_for_the_same_seed(imagenet_root):
    first = [next(iter(build_imagenet_loaders(imagenet_root, 4, 2, seed=3).train)) for _ in range(2)]
    assert torch.equal(first[0][0], first[1][0]) and torch.equal(first[0][1], first[1][1])
    other = next(iter(build_imagenet_loaders(imagenet_root, 4, 2, seed=4).train))
    assert not torch.equal(first[0][0], other[0])


def test_build_dataset_and_loaders_for_imagenet(imagenet_root):
    bundle = build_dataset("imagenet", imagenet_root)
    assert (bundle.num_classes, bundle.verified, bundle.image_size) == (3, False, 224)  # not the official counts
    assert (len(bundle.train), len(bundle.test)) == (12, 9) and bundle.mean == IMAGENET_MEAN
    train, val = build_loaders(bundle, 4, seed=0, device="cpu", dtype=torch.bfloat16, channels_last=True, workers=0)
    images, labels = next(iter(val))
    assert images.dtype == torch.bfloat16 and images.is_contiguous(memory_format=torch.channels_last)
    assert len(train) == 3 and len(val) == 3


def test_missing_folders_and_class_mismatch_are_explained(imagenet_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="train: folder missing; ImageNet is expected as") as error:
        load_imagenet_folders(tmp_path)
    assert "\n" not in str(error.value) and str(tmp_path / "train") in str(error.value)
    import shutil

    root = tmp_path / "mismatch"
    shutil.copytree(imagenet_root, root)
    shutil.rmtree(root / "val" / CLASSES[2])
    with pytest.raises(ValueError, match=r"2 class folders differ from the 3 of .*\(train/val class mismatch\)"):
        load_imagenet_folders(root)
    with pytest.raises(ValueError, match="on_bad_image='ignore' must be one of fail, skip"):
        load_imagenet_folders(imagenet_root, on_bad_image="ignore")

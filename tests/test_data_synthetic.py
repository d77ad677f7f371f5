"""The synthetic set: shapes, determinism, learnable by a tiny conv net in one short epoch, and no single pixel
tells the classes apart."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selectscale.data import DeviceLoader, build_dataset, build_loaders, channel_mean_std, make_synthetic
from selectscale.data.synthetic import synthetic_class_frequencies


@pytest.fixture(scope="module")
def plaids():
    return make_synthetic(4000, 2000, num_classes=10, seed=0)


def test_shapes_dtypes_names_and_unverified(plaids):
    train, test = plaids
    assert train.images.shape == (4000, 3, 32, 32) and test.images.shape == (2000, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.name == test.name == "synthetic" and not train.verified and not test.verified
    assert len(train.classes) == 10 and len(set(train.classes)) == 10
    assert torch.bincount(train.labels, minlength=10).min() > 300  # every class present, roughly balanced
    assert 30 < train.images.float().std() < 70  # uses the grey range without saturating it


def test_same_arguments_same_images_and_test_split_independent_of_train_size(plaids):
    train, test = make_synthetic(4000, 2000, num_classes=10, seed=0)
    assert torch.equal(train.images, plaids[0].images) and torch.equal(test.labels, plaids[1].labels)
    _, test_small = make_synthetic(100, 2000, num_classes=10, seed=0)
    assert torch.equal(test_small.images, plaids[1].images)
    other_train, _ = make_synthetic(4000, 10, num_classes=10, seed=1)
    assert not torch.equal(other_train.images, plaids[0].images)


@pytest.mark.parametrize("num_classes", [2, 10, 37, 100])
def test_class_frequencies_are_distinct_and_below_nyquist(num_classes):
    frequencies = synthetic_class_frequencies(num_classes)
    assert frequencies.shape == (num_classes, 2) and len({tuple(f) for f in frequencies.tolist()}) == num_classes
    assert frequencies.min() >= 2.0 and frequencies.max() <= 12.0  # cycles per 32 pixels; Nyquist is 16


def best_single_pixel_accuracy(train, test, bins=8):
    """Test accuracy of the best classifier that looks at one pixel of one channel: for each of the
    3 x 32 x 32 values, quantise into ``bins`` levels and predict the majority training class per level."""
    num_features, num_classes = train.images[0].numel(), train.num_classes
    train_bins = train.images.flatten(1).long() * bins // 256  # N x F
    counts = torch.zeros(num_features * bins, num_classes)
    cell = torch.arange(num_features) * bins + train_bins  # (feature, level) cell of every training value
    counts.index_put_((cell.flatten(), train.labels.repeat_interleave(num_features)), torch.ones(cell.numel()),
                      accumulate=True)
    majority = counts.argmax(1)  # F * bins
    predictions = majority[torch.arange(num_features) * bins + test.images.flatten(1).long() * bins // 256]
    return (predictions == test.labels[:, None]).float().mean(0).max().item()


def test_no_single_pixel_separates_the_classes(plaids):
    """Chance is 0.10; with 2,000 test images the best of 3,072 noisy estimates of chance is about 0.12."""
    assert best_single_pixel_accuracy(*plaids) < 0.15


def test_mean_image_is_the_same_for_every_class(plaids):
    train, _ = plaids
    class_means = torch.stack([train.images[train.labels == c].float().mean(0) for c in range(10)])
    assert (class_means - class_means.mean(0)).abs().mean() < 2.5  # grey levels; the noise alone gives ~2


def tiny_conv_net(num_classes):
    def block(inputs, outputs, stride):
        return [nn.Conv2d(inputs, outputs, 3, stride, 1), nn.BatchNorm2d(outputs), nn.ReLU()]

    return nn.Sequential(*block(3, 16, 1), *block(16, 32, 2), *block(32, 32, 2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, num_classes))


@pytest.fixture
def one_thread():
    """Small convolutions run fastest on one thread, and when another process holds the second core of a
    2-core machine, two OpenMP threads wait for each other (measured: 0.5 s instead of 15 ms per step)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_a_tiny_conv_net_learns_it_in_one_short_epoch_through_the_augmenting_loader(plaids, one_thread):
    train, test = plaids
    mean, std = channel_mean_std(train.images)
    common = dict(seed=0, mean=mean, std=std, device="cpu")
    train_loader = DeviceLoader(train.images, train.labels, 64, train=True, **common)  # crops and flips on
    test_loader = DeviceLoader(test.images, test.labels, 500, train=False, **common)
    torch.manual_seed(0)
    model = tiny_conv_net(10)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for images, labels in train_loader:  # 62 steps, about a second on one CPU core
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(images).argmax(1) == labels).sum()) for images, labels in test_loader)
    assert correct / len(test) > 0.4  # chance is 0.1; measured 0.79 at this seed, 0.64-0.79 over seeds 0-4


def test_build_dataset_and_loaders_serve_the_synthetic_set():
    bundle = build_dataset("synthetic", num_train=300, num_test=70, num_classes=4, seed=3)
    assert (bundle.name, bundle.num_classes, bundle.verified, bundle.image_size) == ("synthetic", 4, False, 32)
    assert all(0.45 < m < 0.56 for m in bundle.mean) and all(0.1 < s < 0.25 for s in bundle.std)
    train, test = build_loaders(bundle, 64, seed=0, device="cpu", dtype=torch.bfloat16, channels_last=True)
    images, labels = next(iter(train))
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.bfloat16 and labels.max() < 4
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert (len(train), len(test), test.num_samples) == (4, 2, 70)


@pytest.mark.parametrize("arguments, fragment", [
    (dict(num_train=0, num_test=5), "num_train=0"),
    (dict(num_train=5, num_test=5, num_classes=1), "num_classes=1"),
    (dict(num_train=5, num_test=5, image_size=4), "image_size=4"),
])
def test_bad_arguments_are_refused(arguments, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_synthetic(**arguments)

"""CIFAR files: the real cifar-mini subset, md5 verification, channel order and every error case."""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from selectscale.data import (
    CIFAR_MEAN_STD,
    CifarFormatError,
    build_dataset,
    channel_mean_std,
    load_cifar,
    load_cifar_splits,
)
from selectscale.data import cifar as cifar_module

MINI_COUNTS = {("cifar10", True): 5438, ("cifar10", False): 1017, ("cifar100", True): 1117, ("cifar100", False): 916}
# The cifar-mini files are not the official ones: tests that are not about that warning silence it.
IGNORE_UNOFFICIAL = pytest.mark.filterwarnings("ignore:CIFAR-10+ files are not the official ones")
CIFAR10_FILES = ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]


def dump(path, content):
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def declare_official(monkeypatch, folder):
    """Patch the official md5 table so that the files now in ``folder`` count as the official ones."""
    for path in folder.iterdir():
        monkeypatch.setitem(cifar_module.OFFICIAL_MD5, f"{folder.name}/{path.name}", md5(path))


def assert_one_line_naming(error, path, *fragments):
    message = str(error.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


# --- the real cifar-mini subset -------------------------------------------------------------------------


@pytest.mark.parametrize("name, train", list(MINI_COUNTS))
def test_cifar_mini_loads_with_counts_shapes_dtypes_and_unverified(cifar_mini_root, name, train):
    with pytest.warns(UserWarning) as record:
        split = load_cifar(cifar_mini_root, name, train=train)
    count = MINI_COUNTS[(name, train)]
    assert split.images.shape == (count, 3, 32, 32) and split.images.dtype == torch.uint8
    assert split.labels.shape == (count,) and split.labels.dtype == torch.int64
    num_classes = 10 if name == "cifar10" else 100
    assert len(split.classes) == num_classes and split.num_classes == num_classes
    assert int(split.labels.min()) == 0 and int(split.labels.max()) == num_classes - 1
    assert split.verified is False and split.name == name
    assert len(record) == 1  # one warning, naming every data file and not the (official) meta file
    message = str(record[0].message)
    for path in split.files[1:]:
        assert str(path) in message
    assert "meta" not in message and "verified=False" in message


@IGNORE_UNOFFICIAL
def test_cifar_mini_class_names_and_first_labels_are_the_official_ones(cifar_mini_root):
    test = load_cifar(cifar_mini_root, "cifar10", train=False)
    assert test.classes[:3] == ("airplane", "automobile", "bird") and test.classes[-1] == "truck"
    assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the official test_batch begins so
    train100 = load_cifar(cifar_mini_root, "cifar100", train=True)
    assert train100.classes[:3] == ("apple", "aquarium_fish", "baby") and len(train100.classes) == 100


@IGNORE_UNOFFICIAL
def test_channel_order_is_rgb_planes_as_in_the_official_rows(cifar_mini_root):
    split = load_cifar(cifar_mini_root, "cifar10", train=False)
    with open(split.files[-1], "rb") as handle:
        raw = pickle.load(handle, encoding="latin1")["data"]
    for index in (0, 1, 500, 1016):
        for channel in range(3):  # bytes 0-1023 red, 1024-2047 green, 2048-3071 blue, rows of 32
            plane = raw[index, channel * 1024 : (channel + 1) * 1024].reshape(32, 32)
            assert np.array_equal(split.images[index, channel].numpy(), plane)


@IGNORE_UNOFFICIAL
@pytest.mark.parametrize("name, tolerance", [("cifar10", 0.005), ("cifar100", 0.015)])
def test_mean_std_constants_agree_with_the_real_images(cifar_mini_root, name, tolerance):
    """The subset's statistics are close to the full set's; a BGR order would swap R and B by > 0.04."""
    train, _ = load_cifar_splits(cifar_mini_root, name)
    mean, std = channel_mean_std(train.images)
    official_mean, official_std = CIFAR_MEAN_STD[name]
    assert np.allclose(mean, official_mean, atol=tolerance) and np.allclose(std, official_std, atol=tolerance)
    assert official_mean[0] - official_mean[2] > 0.04 and mean[0] - mean[2] > 0.04  # red brighter than blue


def test_build_dataset_carries_verified_false_and_warns_once(cifar_mini_root):
    with pytest.warns(UserWarning) as record:
        bundle = build_dataset("cifar10", cifar_mini_root)
    assert len(record) == 1 and "test_batch" in str(record[0].message) and "data_batch_5" in str(record[0].message)
    assert bundle.verified is False and bundle.num_classes == 10
    assert (len(bundle.train), len(bundle.test)) == (5438, 1017)
    assert bundle.mean == CIFAR_MEAN_STD["cifar10"][0] and bundle.image_size == 32


# --- md5 verification on files written here --------------------------------------------------------------


def test_files_with_the_official_md5_are_verified_and_silent(write_tiny_cifar10, tmp_path, monkeypatch):
    folder = write_tiny_cifar10(tmp_path)
    declare_official(monkeypatch, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, test = load_cifar_splits(tmp_path, "cifar10")
    assert train.verified and test.verified
    assert train.images.shape == (12, 3, 32, 32) and test.images.shape == (5, 3, 32, 32)


def test_one_changed_byte_makes_the_split_unverified_and_names_that_file(write_tiny_cifar10, tmp_path, monkeypatch):
    folder = write_tiny_cifar10(tmp_path)
    declare_official(monkeypatch, folder)
    with open(folder / "data_batch_2", "rb") as handle:
        content = pickle.load(handle, encoding="latin1")
    content["data"][1, 100] ^= 1  # one pixel's lowest bit: same structure, other bytes
    dump(folder / "data_batch_2", content)
    with pytest.warns(UserWarning, match="data_batch_2") as record:
        train = load_cifar(tmp_path, "cifar10", train=True)
    assert not train.verified and "data_batch_1" not in str(record[0].message)
    assert load_cifar(tmp_path, "cifar10", train=False).verified  # the test split is untouched


def test_official_md5_table_comes_from_torchvision():
    assert cifar_module.OFFICIAL_MD5["cifar-10-batches-py/batches.meta"] == "5ff9c542aee3614f3951f8cda6e48888"
    assert cifar_module.OFFICIAL_MD5["cifar-100-python/meta"] == "7973b15100ade9c7d40fb424638fde48"
    assert len(cifar_module.OFFICIAL_MD5) == 7 + 3


# --- errors: one line, naming the file and the problem -----------------------------------------------------


def test_missing_folder_lists_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_cifar(tmp_path, "cifar10", train=True)
    assert_one_line_naming(error, tmp_path / "cifar-10-batches-py", "folder missing", *CIFAR10_FILES)


def test_missing_files_are_listed(write_tiny_cifar10, tmp_path):
    folder = write_tiny_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_cifar(tmp_path, "cifar10", train=True)
    assert_one_line_naming(error, folder, "files missing: data_batch_3 (expected", "download=True")
    with pytest.raises(FileNotFoundError, match="missing: test_batch"):
        load_cifar(tmp_path, "cifar10", train=False)


def corrupt_truncated(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def corrupt_garbage(path):
    path.write_bytes(os.urandom(300))


def corrupt_foreign_pickle(path):
    path.write_bytes(pickle.dumps(os.getcwd, protocol=2))  # a global no CIFAR file refers to


@pytest.mark.parametrize("corrupt", [corrupt_truncated, corrupt_garbage, corrupt_foreign_pickle])
def test_unreadable_pickle_names_the_file(write_tiny_cifar10, tmp_path, corrupt):
    folder = write_tiny_cifar10(tmp_path)
    corrupt(folder / "data_batch_4")
    with pytest.raises(CifarFormatError) as error:
        load_cifar(tmp_path, "cifar10", train=True)
    assert_one_line_naming(error, folder / "data_batch_4", "truncated or unreadable pickle")


BAD_CONTENTS = [
    ({"data": np.zeros((3, 3071), np.uint8), "labels": [0, 1, 2]}, ["'data' has shape (3, 3071)", "N x 3072 uint8"]),
    ({"data": np.zeros((3, 3072), np.float32), "labels": [0, 1, 2]}, ["float32", "N x 3072 uint8"]),
    ({"data": np.zeros((3, 32, 32, 3), np.uint8), "labels": [0, 1, 2]}, ["shape (3, 32, 32, 3)"]),
    ({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1]}, ["'labels' has shape (2,) for 3 images"]),
    ({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 10, 2]}, ["labels out of range: 0..10", "0..9"]),
    ({"data": np.zeros((3, 3072), np.uint8), "labels": [-1, 0, 2]}, ["labels out of range: -1..2"]),
    ({"data": np.zeros((3, 3072), np.uint8), "fine_labels": [0, 1, 2]}, ["no 'labels' entry", "fine_labels"]),
    ([1, 2, 3], ["holds a list, a CIFAR file holds a dict"]),
    # issue 32: labels are integer class indices, one per image row, in [0, 10)
    ({"data": np.zeros((3, 3072), np.uint8), "labels": [0.0, 1.0, 2.0]},
     ["'labels' holds float values (e.g. 0.0 at index 0)", "not integer class indices", "dataset.download=true"]),
    ({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1, 2.5]}, ["float values (e.g. 2.5 at index 2)"]),
    ({"data": np.zeros((3, 3072), np.uint8), "labels": [True, False, True]}, ["holds bool values"]),
    ({"data": np.zeros((3, 3072), np.uint8), "labels": np.array([0.0, 1.0, 2.0])},
     ["'labels' is a float64 array of shape (3,)", "not a list of integer class indices"]),
    ({"data": np.zeros((3, 3072), np.uint8), "labels": "012"}, ["'labels' is a str"]),
    ({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1, 2, 3]},
     ["'labels' has shape (4,) for 3 images", "one label per image row", "dataset.download=true"]),
    ({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1, -3]}, ["labels out of range: -3..1", "dataset.download"]),
    ({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1, 2**70]}, ["beyond 64 bits"]),
]


@pytest.mark.parametrize("content, fragments", BAD_CONTENTS)
def test_bad_batch_contents_name_the_file_and_the_problem(write_tiny_cifar10, tmp_path, content, fragments):
    folder = write_tiny_cifar10(tmp_path)
    dump(folder / "data_batch_1", content)
    with pytest.raises(CifarFormatError) as error:
        load_cifar(tmp_path, "cifar10", train=True)
    assert_one_line_naming(error, folder / "data_batch_1", *fragments)


def test_meta_file_with_a_wrong_class_count_is_refused(write_tiny_cifar10, tmp_path):
    folder = write_tiny_cifar10(tmp_path)
    dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(100)]})
    with pytest.raises(CifarFormatError) as error:
        load_cifar(tmp_path, "cifar10", train=False)
    assert_one_line_naming(error, folder / "batches.meta", "lists 100 class names", "has 10", "class-count mismatch")


def test_train_test_class_count_mismatch_names_the_test_files(write_tiny_cifar10, tmp_path):
    folder = write_tiny_cifar10(tmp_path)
    test_data = np.zeros((4, 3072), np.uint8)
    dump(folder / "test_batch", {"data": test_data, "labels": [0, 1, 4, 3]})  # labels of 5 classes only
    with pytest.raises(CifarFormatError) as error:
        load_cifar_splits(tmp_path, "cifar10")
    assert_one_line_naming(error, folder / "test_batch", "span 5 classes", "span 10", "train/test class-count mismatch")


def test_unknown_data_set_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'cifar1000' is not known: use one of cifar10, cifar100"):
        load_cifar(tmp_path, "cifar1000", train=True)


@IGNORE_UNOFFICIAL
def test_integer_label_arrays_are_read_like_lists(write_tiny_cifar10, tmp_path):
    """A batch file rewritten with numpy (labels as an int32 array) holds the same labels: read as int64."""
    folder = write_tiny_cifar10(tmp_path)
    dump(folder / "data_batch_1", {"data": np.zeros((3, 3072), np.uint8), "labels": np.array([2, 0, 9], np.int32)})
    train = load_cifar(tmp_path, "cifar10", train=True)
    assert train.labels.dtype == torch.int64 and train.labels[:3].tolist() == [2, 0, 9]


def test_a_bad_label_file_is_one_line_exit_2_from_train(write_tiny_cifar10, tmp_path, capsys, monkeypatch):
    """Issue 32: a CIFAR file whose labels are floats trained before; now train.py refuses it with one line
    naming the file (exit 2) and leaves no run directory."""
    import sys

    import selectscale.train as train_module
    from selectscale.failures import SweepRecord

    folder = write_tiny_cifar10(tmp_path / "data")
    dump(folder / "data_batch_2", {"data": np.zeros((2, 3072), np.uint8), "labels": [0.0, 1.0]})
    monkeypatch.setattr(train_module, "SWEEP", SweepRecord())
    monkeypatch.setattr(sys, "argv", ["train.py", "dataset=cifar10", f"dataset.root={tmp_path / 'data'}",
                                      "trainer.device=cpu", "trainer.batch_size=4", "trainer.epochs=1",
                                      "trainer.progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}"])
    before = sorted(tmp_path.rglob("*"))
    assert train_module.run() == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(folder / "data_batch_2") in lines[0] and "float values" in lines[0], lines
    assert sorted(tmp_path.rglob("*")) == before

"""download=True: fetches only what is missing, and offline fails within seconds saying where to put files.

No test here touches the network: the socket connect and torchvision's download function are replaced.
"""

from __future__ import annotations

import threading
import time
from urllib.error import URLError

import pytest

from selectscale.data import DownloadError, load_cifar
from selectscale.data import download as download_module

EXPECTED = ["batches.meta", "data_batch_1", "data_batch_5", "test_batch", "cifar-10-python.tar.gz"]


def refuse_download(*args, **kwargs):
    raise AssertionError("the download function must not be called")


def assert_says_where_to_put_files(error, tmp_path):
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message and "without internet" in message
    for name in EXPECTED:
        assert name in message, f"{name!r} missing from {message!r}"


def test_offline_network_unreachable_fails_fast_with_where_to_put_files(tmp_path, monkeypatch):
    def unreachable(address, timeout=None):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(download_module.socket, "create_connection", unreachable)
    monkeypatch.setattr(download_module, "download_and_extract_archive", refuse_download)
    start = time.monotonic()
    with pytest.raises(DownloadError) as error:
        load_cifar(tmp_path, "cifar10", train=True, download=True)
    assert time.monotonic() - start < 2.0
    assert_says_where_to_put_files(error, tmp_path)
    assert "Network is unreachable" in str(error.value) and "https://www.cs.toronto.edu" in str(error.value)


def test_a_host_that_never_answers_is_given_up_after_the_probe_timeout(tmp_path, monkeypatch):
    release = threading.Event()

    def hang(address, timeout=None):  # like a name lookup on a network that drops packets
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(download_module.socket, "create_connection", hang)
    monkeypatch.setattr(download_module, "PROBE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(download_module, "download_and_extract_archive", refuse_download)
    start = time.monotonic()
    try:
        with pytest.raises(DownloadError, match="no answer from www.cs.toronto.edu within 0.3 s") as error:
            load_cifar(tmp_path, "cifar10", train=False, download=True)
    finally:
        release.set()
    assert time.monotonic() - start < 2.0
    assert_says_where_to_put_files(error, tmp_path)


def test_download_failure_after_a_successful_probe_is_reported_too(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download_module, "probe_host", lambda url, timeout_s: None)
    monkeypatch.setattr(download_module, "download_and_extract_archive", offline)
    with pytest.raises(DownloadError) as error:
        load_cifar(tmp_path, "cifar10", train=True, download=True)
    assert_says_where_to_put_files(error, tmp_path)
    assert "URLError" in str(error.value) and "Temporary failure in name resolution" in str(error.value)


def test_download_fetches_the_official_archive_when_files_are_missing(write_tiny_cifar10, tmp_path, monkeypatch):
    calls = []

    def fake_download(url, download_root, filename, md5):
        calls.append((url, download_root, filename, md5))
        write_tiny_cifar10(tmp_path)  # what extracting the archive would leave

    monkeypatch.setattr(download_module, "probe_host", lambda url, timeout_s: None)
    monkeypatch.setattr(download_module, "download_and_extract_archive", fake_download)
    with pytest.warns(UserWarning, match="not the official ones"):
        split = load_cifar(tmp_path, "cifar10", train=True, download=True)
    assert len(split) == 12
    assert calls == [
        (
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            str(tmp_path),
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        )
    ]


def test_download_is_not_attempted_when_every_file_is_there(cifar_mini_root, monkeypatch):
    monkeypatch.setattr(download_module, "probe_host", refuse_download)
    with pytest.warns(UserWarning, match="not the official ones"):
        split = load_cifar(cifar_mini_root, "cifar100", train=False, download=True)
    assert len(split) == 916

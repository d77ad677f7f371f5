"""Fetching an official archive, and failing fast and clearly when the machine is offline.

torchvision's ``download_and_extract_archive`` opens the URL without a time limit, and a name lookup can
hang for a long time on a machine whose network drops packets. So the host is probed first, in a
background thread bounded by ``PROBE_TIMEOUT_S``, and the transfer itself runs under a socket timeout.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

from selectscale.errors import SelectScaleError

__all__ = ["DownloadError", "download_cifar_archive", "probe_host"]

PROBE_TIMEOUT_S = 5.0  # name lookup + TCP connect to the download host
TRANSFER_TIMEOUT_S = 60.0  # longest wait for any single network read during the transfer


class DownloadError(SelectScaleError, RuntimeError):
    """The archive could not be fetched (offline, unreachable host, or an archive with the wrong md5): exit 2."""


def probe_host(url: str, timeout_s: float) -> None:
    """Raise ``URLError`` unless the URL's host answers a TCP connect within ``timeout_s`` seconds."""
    parsed = urlparse(url)
    address = (parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80))
    outcome: dict[str, BaseException] = {}

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout_s).close()
        except OSError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=connect, name="selectscale-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)  # getaddrinfo has no timeout of its own: bound it from outside
    if thread.is_alive():
        raise URLError(f"no answer from {address[0]} within {timeout_s:g} s")
    if "error" in outcome:
        raise URLError(outcome["error"])


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)  # urllib uses it for every connect and read it does
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_and_extract_archive(url: str, download_root: str, filename: str, md5: str) -> None:
    """torchvision's, imported only when a download happens (torchvision takes about 4 s to import)."""
    from torchvision.datasets.utils import download_and_extract_archive as download

    download(url, download_root=download_root, filename=filename, md5=md5)


def download_cifar_archive(url: str, root: Path, archive: str, md5: str, where_to_put: str) -> None:
    """Download ``url`` to ``root/archive``, check its md5 and extract it into ``root``.

    Raises :class:`DownloadError`, one line, with the cause and ``where_to_put`` (the expected files)."""
    try:
        probe_host(url, PROBE_TIMEOUT_S)
        with _socket_timeout(TRANSFER_TIMEOUT_S):
            download_and_extract_archive(url, download_root=str(root), filename=archive, md5=md5)
    except (OSError, RuntimeError) as exc:  # URLError and timeouts are OSErrors; a wrong md5 is a RuntimeError
        cause = " ".join(str(exc).split())
        raise DownloadError(
            f"could not download {url} ({type(exc).__name__}: {cause}); without internet, put the official "
            f"files there yourself: {where_to_put} (the contents of {archive})"
        ) from exc

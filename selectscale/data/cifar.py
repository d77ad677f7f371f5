"""CIFAR-10 / CIFAR-100 from the official "python version" files, offline first.

``load_cifar(root, "cifar10", train=True)`` reads ``root/cifar-10-batches-py/`` (``root/cifar-100-python/``
for CIFAR-100) exactly as Krizhevsky distributes it and returns a :class:`CifarSplit`: all images as one
uint8 N x 3 x 32 x 32 tensor in the official order, int64 labels (the fine labels for CIFAR-100), the
class names from the meta file and ``verified``: True only when every file read (meta file included) has
the official md5 sum. Files that are not the official ones are still read, with one warning naming them,
so that a results table can never mix official and other data unseen.

The files are pickles, read safely by :mod:`selectscale.data.cifar_files` (which also checks their shapes and
labels); this module knows where they live, whether they are the official ones and how the splits fit.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cifar_files import CifarFormatError, read_batch, read_classes
from .download import download_cifar_archive

__all__ = [
    "CIFAR_MEAN_STD", "CifarFormatError", "CifarSpec", "CifarSplit", "UnofficialFilesWarning", "check_same_classes",
    "cifar_specs", "download_cifar", "load_cifar", "load_cifar_splits", "official_md5",
]

# Per-channel (R, G, B) mean and standard deviation of the 50,000 official training images, in [0, 1] units,
# over every pixel (population std). CIFAR-10: as computed in kuangliu/pytorch-cifar issue #19 (and used by
# airbench: 0.4914, 0.4822, 0.4465 / 0.2470, 0.2435, 0.2616); CIFAR-100: as in weiaicunzai/pytorch-cifar100
# (conf/global_settings.py). The often copied CIFAR-10 std (0.2023, 0.1994, 0.2010) is a mean of per-image
# stds, not the data set's std. tests/test_data_cifar.py checks the cifar-mini subset agrees (0.005 / 0.015).
CIFAR_MEAN_STD: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.49139968, 0.48215841, 0.44653091), (0.24703223, 0.24348513, 0.26158784)),
    "cifar100": ((0.50707516, 0.48654887, 0.44091784), (0.26733429, 0.25643846, 0.27615047)),
}

@dataclass(frozen=True)
class CifarSpec:
    """Where the official files of one CIFAR data set live and what they must contain."""

    name: str  # "cifar10"
    title: str  # "CIFAR-10", for messages
    folder: str  # folder inside root, as the official archive extracts it
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    meta_key: str  # entry of the meta file with the class names
    label_key: str  # entry of a batch file with the labels
    num_classes: int
    url: str
    archive: str
    archive_md5: str

    def data_files(self, train: bool) -> tuple[str, ...]:
        return self.train_files if train else self.test_files

    def all_files(self) -> tuple[str, ...]:
        return (self.meta_file, *self.train_files, *self.test_files)


def _spec_from_torchvision(tv_class, name: str, title: str, label_key: str, num_classes: int) -> CifarSpec:
    return CifarSpec(
        name=name,
        title=title,
        folder=tv_class.base_folder,
        train_files=tuple(entry[0] for entry in tv_class.train_list),
        test_files=tuple(entry[0] for entry in tv_class.test_list),
        meta_file=tv_class.meta["filename"],
        meta_key=tv_class.meta["key"],
        label_key=label_key,
        num_classes=num_classes,
        url=tv_class.url,
        archive=tv_class.filename,
        archive_md5=tv_class.tgz_md5,
    )


# The file lists and md5 sums are torchvision's (not retyped), read on first use: importing torchvision takes
# about 4 s on a 2-core CPU (it loads torch._dynamo), which a run on synthetic data should not pay.
@functools.cache
def cifar_specs() -> dict[str, CifarSpec]:
    """The :class:`CifarSpec` of ``cifar10`` and ``cifar100`` (also ``CIFAR_SPECS``)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    return {"cifar10": _spec_from_torchvision(CIFAR10, "cifar10", "CIFAR-10", "labels", 10),
            "cifar100": _spec_from_torchvision(CIFAR100, "cifar100", "CIFAR-100", "fine_labels", 100)}


@functools.cache
def official_md5() -> dict[str, str]:
    """Official md5 of every file, keyed by its path relative to root (also ``OFFICIAL_MD5``)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    return {f"{tv_class.base_folder}/{file_name}": md5
            for tv_class in (CIFAR10, CIFAR100)
            for file_name, md5 in (*tv_class.train_list, *tv_class.test_list,
                                   (tv_class.meta["filename"], tv_class.meta["md5"]))}


def __getattr__(name: str):  # PEP 562: CIFAR_SPECS and OFFICIAL_MD5 as module constants, built on first use
    if name == "CIFAR_SPECS":
        return cifar_specs()
    if name == "OFFICIAL_MD5":
        return official_md5()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class CifarSplit:
    """One split of a CIFAR-shaped data set, whole, in memory.

    ``images``: uint8 N x 3 x H x W (RGB); ``labels``: int64 N; ``classes``: class names;
    ``verified``: every file has the official md5; ``files``: the files read (meta file first)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    verified: bool
    name: str
    files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.labels.numel())


def _spec(name: str) -> CifarSpec:
    specs = cifar_specs()
    if name not in specs:
        raise ValueError(f"CIFAR data set {name!r} is not known: use one of {', '.join(specs)}")
    return specs[name]


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unofficial_files(root: Path, paths: list[Path]) -> list[Path]:
    return [p for p in paths if official_md5().get(p.relative_to(root).as_posix()) != _file_md5(p)]


def _check_present(root: Path, spec: CifarSpec, names: tuple[str, ...]) -> None:
    folder = root / spec.folder
    hint = f"download=True fetches {spec.url}, or extract {spec.archive} into {root}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {spec.title} folder missing; expected {', '.join(names)} in it ({hint})")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: {spec.title} files missing: {', '.join(missing)} (expected {', '.join(names)}; {hint})"
        )


def download_cifar(root: str | Path, name: str) -> None:
    """Fetch and extract the official archive (md5-checked) into ``root`` unless every file is there.

    Files already present are never overwritten. Offline it fails within seconds with
    :class:`~selectscale.data.download.DownloadError`, saying where to put the files."""
    spec = _spec(name)
    root = Path(root).expanduser()
    folder = root / spec.folder
    if all((folder / n).is_file() for n in spec.all_files()):
        return
    expected = f"{', '.join(spec.all_files())} in {folder}"
    download_cifar_archive(spec.url, root, spec.archive, spec.archive_md5, where_to_put=expected)


def _read_split(root: Path, spec: CifarSpec, train: bool) -> tuple[CifarSplit, list[Path]]:
    names = (spec.meta_file, *spec.data_files(train))
    _check_present(root, spec, names)
    paths = [root / spec.folder / n for n in names]
    classes = read_classes(paths[0], spec.meta_key, spec.num_classes, spec.title)
    batches = [read_batch(p, spec.label_key, spec.num_classes, spec.title) for p in paths[1:]]
    unofficial = _unofficial_files(root, paths)
    split = CifarSplit(
        images=torch.cat([images for images, _ in batches]),
        labels=torch.cat([labels for _, labels in batches]),
        classes=classes,
        verified=not unofficial,
        name=spec.name,
        files=tuple(paths),
    )
    return split, unofficial


class UnofficialFilesWarning(UserWarning):
    """Files that are not the official ones (md5 differs) were read: ``title`` (e.g. CIFAR-10) and ``files`` name
    them, so that a caller can say so in its own words (the engine: one log line)."""

    def __init__(self, message: str, title: str, files: tuple[Path, ...]) -> None:
        super().__init__(message)
        self.title, self.files = title, files


def _warn_unofficial(spec: CifarSpec, unofficial: list[Path]) -> None:
    if unofficial:
        warnings.warn(
            UnofficialFilesWarning(f"{spec.title} files are not the official ones (md5 differs), read anyway and "
                                   f"marked verified=False: {', '.join(str(p) for p in unofficial)}",
                                   spec.title, tuple(unofficial)),
            stacklevel=3,
        )


def load_cifar(root: str | Path, name: str, train: bool, download: bool = False) -> CifarSplit:
    """Read one split of CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``) from ``root``.

    Raises ``FileNotFoundError`` (missing folder or files, naming the expected ones) and
    :class:`CifarFormatError` (a file that cannot be used), each a one-line message naming the file.
    Warns once, naming them, when files are not the official ones; ``verified`` is then False."""
    spec = _spec(name)
    root = Path(root).expanduser().absolute()
    if download:
        download_cifar(root, name)
    split, unofficial = _read_split(root, spec, train)
    _warn_unofficial(spec, unofficial)
    return split


def check_same_classes(train: CifarSplit, test: CifarSplit) -> None:
    """Raise :class:`CifarFormatError` when the two splits disagree on the classes: different class
    names, or labels spanning a different number of classes (highest label + 1)."""
    train_span, test_span = (int(split.labels.max()) + 1 if len(split) else 0 for split in (train, test))
    if train.classes != test.classes or train_span != test_span:
        test_files = ", ".join(str(p) for p in test.files[1:])
        raise CifarFormatError(
            f"{test_files}: test labels span {test_span} classes ({len(test.classes)} names), the training files "
            f"span {train_span} ({len(train.classes)} names): train/test class-count mismatch"
        )


def load_cifar_splits(root: str | Path, name: str, download: bool = False) -> tuple[CifarSplit, CifarSplit]:
    """Both splits (one warning for all unofficial files), checked with :func:`check_same_classes`."""
    spec = _spec(name)
    root = Path(root).expanduser().absolute()
    if download:
        download_cifar(root, name)
    train, unofficial_train = _read_split(root, spec, train=True)
    test, unofficial_test = _read_split(root, spec, train=False)
    check_same_classes(train, test)
    _warn_unofficial(spec, list(dict.fromkeys(unofficial_train + unofficial_test)))  # the meta file once
    return train, test

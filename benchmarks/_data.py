"""Offline loaders for the shared benchmark data (never downloads anything).

The data folder is ``$FXPRUNE_DATA`` when set, else ``../shared/data`` beside the repository
root (CI runs a clone with ``shared/`` next to it). Each loader raises ``DataUnavailable`` with
the path it looked at when its files are missing, so tests can skip with a clear reason.

    >>> x, y = load_fashion_mnist("train")          # uint8 (60000, 28, 28), int64 (60000,)
    >>> x, y = load_cifar10_jpeg("test")            # uint8 (10000, 32, 32, 3), int64 (10000,)
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "DataUnavailable", "data_root", "load_fashion_mnist", "load_cifar10_jpeg", "cifar10_jpeg_labels",
    "stratified_subset", "CIFAR10_MEAN", "CIFAR10_STD",
]  # fmt: skip

REPO_ROOT = Path(__file__).resolve().parents[1]
# Measured on the JPEG copy (shared/data/README.md); JPEG smoothing lowers the std slightly.
CIFAR10_MEAN = (0.4913, 0.4821, 0.4465)
CIFAR10_STD = (0.2452, 0.2428, 0.2606)


class DataUnavailable(FileNotFoundError):
    """The shared data folder (or one dataset in it) is not there."""


def data_root() -> Path:
    env = os.environ.get("FXPRUNE_DATA")
    return Path(env).expanduser() if env else (REPO_ROOT.parent / "shared" / "data")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataUnavailable(
            f"{what} not found at {path} (set FXPRUNE_DATA to the data folder holding fashion-mnist/ and "
            f"cifar10-jpeg/; default: ../shared/data beside the repository root)"
        )
    return path


def _idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


@lru_cache(maxsize=4)
def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from the original idx ``.gz`` files: uint8 images (N, 28, 28) and int64
    labels (N,). ``split`` is "train" (60000) or "test" (10000)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    raw = _need(data_root() / "fashion-mnist" / "FashionMNIST" / "raw", "Fashion-MNIST")
    stem = "train" if split == "train" else "t10k"
    images = _idx(_need(raw / f"{stem}-images-idx3-ubyte.gz", "Fashion-MNIST images"), 16)
    labels = _idx(_need(raw / f"{stem}-labels-idx1-ubyte.gz", "Fashion-MNIST labels"), 8)
    x = images.reshape(-1, 28, 28)
    y = labels.astype(np.int64)
    if len(x) != len(y):
        raise ValueError(f"Fashion-MNIST {split}: {len(x)} images but {len(y)} labels")
    return x, y


@lru_cache(maxsize=1)
def _cifar10_blobs() -> dict[str, tuple[list[bytes], np.ndarray]]:
    """The JPEG files of each split, undecoded, and their labels, sorted by (label, file number)."""
    tar_path = _need(data_root() / "cifar10-jpeg" / "cifar10_jpeg.tar.gz", "CIFAR-10 JPEG tar")
    items: dict[str, list[tuple[int, int, bytes]]] = {"train": [], "test": []}
    with tarfile.open(tar_path, "r:gz") as tar:
        members = tar.getmembers()
        by_name = {m.name: m for m in members}
        classes = tar.extractfile(by_name["classes.txt"]).read().decode().split()  # type: ignore[union-attr]
        index = {c: i for i, c in enumerate(classes)}
        for m in members:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) != 3 or parts[0] not in items or not parts[2].endswith(".jpg"):
                continue
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            items[parts[0]].append((index[parts[1]], int(parts[2][:-4]), data))
    out = {}
    for split, rows in items.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        out[split] = ([r[2] for r in rows], np.array([r[0] for r in rows], dtype=np.int64))
    return out


def _decode(blobs: list[bytes], decoder: str) -> np.ndarray:
    """uint8 (N, 32, 32, 3) from JPEG bytes, with Pillow or torchvision.io.decode_jpeg (one C++
    call for the whole list, ~3x faster; the same libjpeg-turbo, bit-identical on this copy)."""
    if decoder == "torchvision" and blobs:
        try:
            import torch
            from torchvision.io import ImageReadMode, decode_jpeg

            images = decode_jpeg([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs],
                                 mode=ImageReadMode.RGB)  # fmt: skip
            return torch.stack(images).permute(0, 2, 3, 1).contiguous().numpy()
        except Exception:  # noqa: BLE001 - no torchvision, or its decoder failed: Pillow below
            decoder = "pil"
    if decoder == "torchvision":
        decoder = "pil"
    if decoder != "pil":
        raise ValueError(f"decoder must be 'pil' or 'torchvision', got {decoder!r}")
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow is a benchmark dependency
        raise DataUnavailable("decoding the CIFAR-10 JPEG copy needs Pillow: pip install Pillow") from e
    if not blobs:
        return np.zeros((0, 32, 32, 3), np.uint8)
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])


@lru_cache(maxsize=1)
def _cifar10_all() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: (_decode(blobs, "pil"), y) for split, (blobs, y) in _cifar10_blobs().items()}


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def cifar10_jpeg_labels(split: str = "train") -> np.ndarray:
    """The int64 labels of ``load_cifar10_jpeg(split)``, without decoding any image."""
    _check_split(split)
    return _cifar10_blobs()[split][1]


def load_cifar10_jpeg(
    split: str = "train", indices: np.ndarray | None = None, decoder: str = "pil"
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from the lossy JPEG copy: uint8 images (N, 32, 32, 3) and int64 labels (N,),
    sorted by (label, file number), so shuffle before training. ``split``: "train" (50000) or
    "test" (10000). The first call decodes all 60000 images (about 10 s) and caches them.

    ``indices`` (into the sorted split) decodes only those images, and ``decoder="torchvision"``
    decodes with ``torchvision.io.decode_jpeg`` (Pillow when torchvision is missing); either
    one reads the archive (cached, undecoded) and decodes on every call, caching no images."""
    _check_split(split)
    if indices is None and decoder == "pil":
        return _cifar10_all()[split]
    blobs, y = _cifar10_blobs()[split]
    if indices is not None:
        idx = np.asarray(indices, dtype=np.int64)
        blobs, y = [blobs[i] for i in idx], y[idx]
    return _decode(blobs, decoder), y


def stratified_subset(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` samples with (as near as possible) equal counts per class, shuffled."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = n // len(classes)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in classes])
    if len(idx) < n:
        rest = np.setdiff1d(np.arange(len(y)), idx)
        idx = np.concatenate([idx, rng.permutation(rest)[: n - len(idx)]])
    return rng.permutation(idx)

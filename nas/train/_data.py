"""Image datasets as uint8 arrays: loading, caching, the validation slice, batches, augmentation.

Sources (``format``: one of :data:`~nas.train.DATA_FORMATS`, a registry of small classes
in :mod:`nas.train._formats`; a plug-in package may add one):

``folder``
    An image folder, ``root/<class>/*.jpg|png``, or one with ``train/`` and ``test/`` splits
    (``root/train/<class>/...``, ``root/test/<class>/...``), possibly below one top folder.
``tar``
    The same layout read straight from a ``.tar``/``.tar.gz`` archive, e.g. the CIFAR-10 JPEG
    copy ``cifar10/train/<class>/NNNN.jpg``.
``cifar-python`` / ``cifar-binary``
    The official CIFAR-10 releases (``cifar-10-batches-py``, ``cifar-10-batches-bin``), as a
    folder or as the ``.tar.gz`` archive.
``npz``
    A NumPy file with ``x_train, y_train`` and optionally ``x_test, y_test`` (NHWC or NCHW,
    uint8, 1 or 3 channels), and optionally ``classes``.
``digits``
    scikit-learn's bundled 8x8 digits (no file; ``source: digits``), upscaled to the space's
    largest resolution, split 80/20 into train/test with a fixed seed.

Images are decoded once (with Pillow) into uint8 arrays ``(n, h, w, 3)``, cached as an
``.npz`` keyed by the source's path, size and modification time, so an epoch is never bound
by JPEG decoding. A folder without ``train/`` and ``test/`` has no test set.

Every problem with the input (missing path, corrupt archive or image, empty class folder, an
image of another size) raises one :class:`~nas.errors.DataError` naming the path.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas._io import atomic_path
from nas._settings import cache_dir as _cache_root
from nas.errors import DataError
from nas.train._formats import (
    DATA_FORMATS,
    FORMATS,
    DataFormat,
    Raw,
    check_arrays,
    detect_format,
)

__all__ = [
    "DATA_FORMATS",
    "FORMATS",
    "BatchLoader",
    "DataSplits",
    "ImageSet",
    "Preprocess",
    "default_cache_dir",
    "detect_format",
    "load_dataset",
]

_CACHE_VERSION = "1"


# ---------------------------------------------------------------------- containers
@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images ``x`` ``(n, h, w, 3)`` uint8 and labels ``y`` ``(n,)`` int64."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: np.ndarray | Sequence[int]) -> ImageSet:
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(self.x[idx], self.y[idx])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x.shape[1]), int(self.x.shape[2])


@dataclass(frozen=True, eq=False)
class DataSplits:
    """A dataset cut into training images, the fixed validation slice, and the test set.

    Attributes:
        key: a short fingerprint of the source and of the slicing, for result caches.
    """

    train: ImageSet
    val: ImageSet
    test: ImageSet | None
    classes: tuple[str, ...]
    source: str
    format: str
    key: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        h, w = self.train.image_size
        test = f"{len(self.test)} test" if self.test is not None else "no test set"
        return (f"{self.source} ({self.format}): {len(self.classes)} classes, {h}x{w} px, "
                f"{len(self.train)} train / {len(self.val)} val / {test}")


# ---------------------------------------------------------------------- entry point
def load_dataset(
    source: str | Path,
    *,
    format: str = "auto",
    val_size: int = 5000,
    val_seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    cache_dir: str | Path | None = None,
    image_size: int = 32,
    use_cache: bool = True,
) -> DataSplits:
    """Load a dataset and cut the validation slice.

    Args:
        source: a path, or ``"digits"``.
        format: ``"auto"`` or one of :data:`DATA_FORMATS`.
        val_size: training images held out, chosen by a permutation seeded with ``val_seed``.
        train_limit: keep at most this many of the remaining training images (seeded).
        test_limit: keep at most this many test images (seeded).
        cache_dir: where decoded images are cached (see :func:`default_cache_dir`).
        image_size: the side of the upscaled ``digits`` images.
        use_cache: read and write the cache of decoded images.

    Raises:
        DataError: naming the path, for any problem with the input.
    """
    fmt = detect_format(source) if format == "auto" else format
    if fmt not in DATA_FORMATS:
        raise DataError(f"data format must be 'auto' or one of {DATA_FORMATS.names()}, got "
                        f"{format!r}")
    reader = DATA_FORMATS.get(fmt)
    if reader.modality != "images":
        raise DataError(f"{source} is of data format {fmt!r}, which holds {reader.modality}, "
                        "not images; it trains the language models of the gpt family")
    if not reader.needs_path:
        raw = reader.load(source, image_size=image_size)
        src = str(source)
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"data source not found: {path} (relative paths are relative to "
                            f"the working directory {Path.cwd()})")
        src = str(path)
        raw = _cached(path, reader, cache_dir, use_cache)
    tr_x, tr_y, te_x, te_y, classes = raw
    check_arrays(tr_x, tr_y, f"{src} (train)")
    if te_x is not None and te_y is not None:
        check_arrays(te_x, te_y, f"{src} (test)")
        if te_x.shape[1:] != tr_x.shape[1:]:
            raise DataError(f"{src}: test images are {te_x.shape[1]}x{te_x.shape[2]} but "
                            f"training images are {tr_x.shape[1]}x{tr_x.shape[2]}")
    n = len(tr_y)
    if val_size < 0 or val_size >= n:
        raise DataError(f"val_size must be in [0, {n - 1}] for {src} ({n} training images), "
                        f"got {val_size}")
    perm = np.random.default_rng(val_seed).permutation(n)
    val_idx = np.sort(perm[:val_size])
    train_idx = perm[val_size:]
    if train_limit is not None:
        train_idx = train_idx[:train_limit]
    train_idx = np.sort(train_idx)
    train = ImageSet(tr_x[train_idx], tr_y[train_idx])
    val = ImageSet(tr_x[val_idx], tr_y[val_idx])
    test = None
    if te_x is not None and te_y is not None:
        test = ImageSet(te_x, te_y)
        if test_limit is not None and test_limit < len(test):
            idx = np.sort(np.random.default_rng(val_seed + 1).permutation(len(test))[:test_limit])
            test = test.subset(idx)
    key_src = src if not reader.needs_path else _source_key(Path(source), fmt)
    key = hashlib.sha256(
        f"{key_src}|{val_size}|{val_seed}|{train_limit}|{test_limit}".encode()
    ).hexdigest()[:16]
    return DataSplits(train, val, test, tuple(classes), src, fmt, key)


def default_cache_dir() -> Path:
    """``$NAS_CACHE_DIR/data``, else ``$XDG_CACHE_HOME/nas/data``, else ``~/.cache/nas/data``."""
    return _cache_root() / "data"


# ---------------------------------------------------------------------- caching

def _source_key(path: Path, fmt: str) -> str:
    path = path.resolve()
    if path.is_dir():
        count = size = mtime = 0
        for root, _dirs, files in os.walk(path):
            for f in files:
                st = os.stat(os.path.join(root, f))
                count += 1
                size += st.st_size
                mtime = max(mtime, st.st_mtime_ns)
        stamp = f"dir:{count}:{size}:{mtime}"
    else:
        st = path.stat()
        stamp = f"file:{st.st_size}:{st.st_mtime_ns}"
    text = f"{_CACHE_VERSION}|{fmt}|{path}|{stamp}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _cached(path: Path, reader: type[DataFormat], cache_dir: str | Path | None,
            use_cache: bool) -> Raw:
    # npz and CIFAR batches are arrays already: only decoded images are worth a cache
    if not reader.cache_decoded or not use_cache:
        return reader.load(path)
    fmt = reader.name
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = path.name.split(".")[0] or "data"
    cfile = cdir / f"{name}-{_source_key(path, fmt)}.npz"
    if cfile.is_file():
        try:
            with np.load(cfile, allow_pickle=False) as z:
                te_x = z["test_x"] if "test_x" in z else None
                te_y = z["test_y"] if "test_y" in z else None
                return z["train_x"], z["train_y"], te_x, te_y, [str(c) for c in z["classes"]]
        except (OSError, ValueError, KeyError, zlib.error, EOFError):
            pass  # a broken cache entry is rebuilt below
    raw = reader.load(path)
    arrays = {"train_x": raw[0], "train_y": raw[1], "classes": np.asarray(raw[4])}
    if raw[2] is not None and raw[3] is not None:
        arrays["test_x"], arrays["test_y"] = raw[2], raw[3]
    try:
        with atomic_path(cfile) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
    except OSError:
        pass  # an unwritable cache folder costs time, not correctness
    return raw


# ---------------------------------------------------------------------- batches
class BatchLoader:
    """Batches of an :class:`ImageSet` as ``(x, y)`` tensors: uint8 ``(b, 3, h, w)``, int64.

    ``x`` is a view of the NHWC array, i.e. NCHW in channels-last memory format.
    With ``world_size > 1`` each rank gets its own disjoint shard of every epoch's order, and all
    ranks the same number of batches (``drop_last``).

    Args:
        shuffle: a new order each epoch, seeded with ``(seed, epoch)``.
        limit: use only the first ``limit`` images (in the set's order).
    """

    def __init__(
        self, data: ImageSet, batch_size: int, *, shuffle: bool = False, seed: int = 0,
        drop_last: bool = False, rank: int = 0, world_size: int = 1, limit: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x = torch.from_numpy(data.x).permute(0, 3, 1, 2)  # (n, 3, h, w), NHWC memory
        self.y = torch.from_numpy(data.y)
        self.n = len(data) if limit is None else min(limit, len(data))
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size

    def _per_rank(self) -> int:
        return self.n // self.world_size if self.world_size > 1 else self.n

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def indices(self, epoch: int = 0) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.world_size > 1:
            per = self._per_rank()
            order = order[self.rank : per * self.world_size : self.world_size]
        return order

    def epoch(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple[torch.Tensor,
                                                                            torch.Tensor]]:
        order = self.indices(epoch)
        for b in range(start_batch, len(self)):
            idx = torch.from_numpy(order[b * self.batch_size : (b + 1) * self.batch_size])
            yield self.x[idx], self.y[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


class Preprocess:
    """uint8 batches to the network's input: augmentation, scaling, normalisation, resizing.

    Augmentation (training only) is done on tensors, batched: a random crop of the original size
    from the image zero-padded by ``crop_padding`` pixels, and a horizontal flip with
    probability 1/2. The batch is then resized to the requested resolution (bilinear,
    anti-aliased): OFA's elastic resolution, which may change from batch to batch.

    Args:
        mean, std, scale: the space's preprocessing (``space.spec.preprocessing``).
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], scale: float = 1 / 255,
        *, crop_padding: int = 4, flip: bool = True, channels_last: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale = float(scale)
        self.crop_padding, self.flip, self.channels_last = crop_padding, flip, channels_last

    @classmethod
    def for_space(cls, space: Any, **kwargs: Any) -> Preprocess:
        p = space.spec.preprocessing
        return cls(p.mean, p.std, p.scale, **kwargs)

    def __call__(
        self, x: torch.Tensor, r: int, *, train: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``x`` uint8 ``(b, 3, h, w)`` -> float ``(b, 3, r, r)``, normalised."""
        if train:
            x = self.augment(x, generator)
        x = x.to(self.device, non_blocking=True).float()
        x = (x * self.scale - self.mean) / self.std
        if x.shape[-1] != r or x.shape[-2] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False,
                              antialias=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def augment(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random crop with zero padding and horizontal flip, per image (on the CPU, uint8)."""
        b, _c, h, w = x.shape
        p = self.crop_padding
        if p > 0:
            xp = F.pad(x, (p, p, p, p))  # (b, c, h + 2p, w + 2p)
            oy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=generator)
            rows = (oy[:, None] + torch.arange(h))[:, :, None]  # (b, h, 1)
            cols = (ox[:, None] + torch.arange(w))[:, None, :]  # (b, 1, w)
            bi = torch.arange(b)[:, None, None]
            x = xp.permute(0, 2, 3, 1)[bi, rows, cols].permute(0, 3, 1, 2)  # (b, c, h, w)
        if self.flip:
            flip = torch.rand(b, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

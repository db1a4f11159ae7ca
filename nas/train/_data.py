"""Image datasets as uint8 arrays: loading, caching, the validation slice, batches, augmentation.

Sources (``format``):

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
import io
import os
import pickle
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.errors import DataError, MissingDependencyError

__all__ = [
    "FORMATS",
    "BatchLoader",
    "DataSplits",
    "ImageSet",
    "Preprocess",
    "default_cache_dir",
    "detect_format",
    "load_dataset",
]

FORMATS = ("folder", "tar", "cifar-python", "cifar-binary", "npz", "digits")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CACHE_VERSION = "1"
_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                  "ship", "truck")


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
        format: ``"auto"`` or one of :data:`FORMATS`.
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
    if fmt not in FORMATS:
        raise DataError(f"data format must be 'auto' or one of {list(FORMATS)}, got {format!r}")
    if fmt == "digits":
        raw = _load_digits(image_size)
        src = "digits"
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"data source not found: {path} (relative paths are relative to "
                            f"the working directory {Path.cwd()})")
        src = str(path)
        raw = _cached(path, fmt, cache_dir, use_cache)
    tr_x, tr_y, te_x, te_y, classes = raw
    _check_arrays(tr_x, tr_y, f"{src} (train)")
    if te_x is not None and te_y is not None:
        _check_arrays(te_x, te_y, f"{src} (test)")
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
    key_src = "digits" if fmt == "digits" else _source_key(Path(source), fmt)
    key = hashlib.sha256(
        f"{key_src}|{val_size}|{val_seed}|{train_limit}|{test_limit}".encode()
    ).hexdigest()[:16]
    return DataSplits(train, val, test, tuple(classes), src, fmt, key)


def default_cache_dir() -> Path:
    """``$NAS_CACHE_DIR/data``, else ``$XDG_CACHE_HOME/nas/data``, else ``~/.cache/nas/data``."""
    if os.environ.get("NAS_CACHE_DIR"):
        return Path(os.environ["NAS_CACHE_DIR"]) / "data"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nas" / "data"


def detect_format(source: str | Path) -> str:
    """Tell the format of ``source`` from its name and contents (see :data:`FORMATS`)."""
    if str(source) == "digits":
        return "digits"
    path = Path(source)
    if not path.exists():
        raise DataError(f"data source not found: {path} (relative paths are relative to the "
                        f"working directory {Path.cwd()})")
    if path.is_dir():
        names = {p.name for p in path.rglob("*data_batch_1*")}
        if "data_batch_1.bin" in names:
            return "cifar-binary"
        if "data_batch_1" in names:
            return "cifar-python"
        return "folder"
    if path.suffix == ".npz":
        return "npz"
    if tarfile.is_tarfile(path) or path.name.endswith((".tar", ".tar.gz", ".tgz")):
        try:
            with tarfile.open(path, "r:*") as tf:
                for m in tf:
                    base = PurePosixPath(m.name).name
                    if base == "data_batch_1.bin":
                        return "cifar-binary"
                    if base == "data_batch_1":
                        return "cifar-python"
                    if base.lower().endswith(IMAGE_SUFFIXES):
                        return "tar"
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"cannot read archive {path}: {exc} (corrupt or truncated?)") from None
        raise DataError(f"archive {path} holds no images and no CIFAR-10 batches")
    raise DataError(f"cannot tell the format of {path}; set data format to one of "
                    f"{list(FORMATS)}")


# ---------------------------------------------------------------------- caching
Raw = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str]]


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


def _cached(path: Path, fmt: str, cache_dir: str | Path | None, use_cache: bool) -> Raw:
    # npz and CIFAR batches are arrays already: only decoded images are worth a cache
    if fmt not in ("folder", "tar") or not use_cache:
        return _LOADERS[fmt](path)
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
    raw = _LOADERS[fmt](path)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cdir, prefix=f".{cfile.name}.", suffix=".tmp")
        os.close(fd)
        try:
            arrays = {"train_x": raw[0], "train_y": raw[1], "classes": np.asarray(raw[4])}
            if raw[2] is not None and raw[3] is not None:
                arrays["test_x"], arrays["test_y"] = raw[2], raw[3]
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, cfile)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass  # an unwritable cache folder costs time, not correctness
    return raw


# ---------------------------------------------------------------------- image folders
def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError(
            "decoding image files needs Pillow: pip install 'pillow>=10'"
        ) from None
    return Image


def _decode(data: bytes, where: str, expect: tuple[int, int] | None) -> np.ndarray:
    image_mod = _pil()
    try:
        with image_mod.open(io.BytesIO(data)) as img:
            img.load()
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, image_mod.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {where}: {exc}") from None
    if expect is not None and arr.shape[:2] != expect:
        raise DataError(f"image {where} is {arr.shape[1]}x{arr.shape[0]} px but the other "
                        f"images are {expect[1]}x{expect[0]}; all images must have one size")
    return arr


def _split_layout(rel_paths: Sequence[str], where: str) -> dict[str, dict[str, list[str]]]:
    """Group image paths into ``{split: {class: [paths]}}`` (split ``train`` or ``test``)."""
    with_split: dict[str, dict[str, list[str]]] = {}
    plain: dict[str, list[str]] = {}
    prefixes: set[tuple[str, ...]] = set()
    for rel in rel_paths:
        parts = PurePosixPath(rel).parts
        if len(parts) >= 3 and parts[-3] in ("train", "test"):
            with_split.setdefault(parts[-3], {}).setdefault(parts[-2], []).append(rel)
        elif len(parts) >= 2:
            plain.setdefault(parts[-2], []).append(rel)
            prefixes.add(parts[:-2])
        else:
            raise DataError(f"{where}: image {rel} is not inside a class folder; expected "
                            "root/<class>/<image> or root/train/<class>/<image>")
    if with_split:
        if "train" not in with_split:
            raise DataError(f"{where}: has a test/ folder but no train/ folder")
        return with_split
    if not plain:
        raise DataError(f"{where}: no images (.jpg, .jpeg, .png) found")
    if len(prefixes) > 1:
        raise DataError(f"{where}: images at different depths ({len(prefixes)} different parent "
                        "folders of class folders); expected root/<class>/<image>")
    return {"train": plain}


def _assemble(
    layout: dict[str, dict[str, list[str]]], decoded: dict[str, np.ndarray], where: str
) -> Raw:
    classes = sorted(layout["train"])
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, by_class in layout.items():
        extra = sorted(set(by_class) - set(classes))
        if extra:
            raise DataError(f"{where}: {split}/ has class folder(s) {extra} missing from train/")
        xs, ys = [], []
        for c in sorted(by_class):
            for rel in sorted(by_class[c]):
                xs.append(decoded[rel])
                ys.append(index[c])
        out[split] = (np.stack(xs), np.asarray(ys, dtype=np.int64))
    te = out.get("test")
    return out["train"][0], out["train"][1], te[0] if te else None, te[1] if te else None, classes


def _load_folder(path: Path) -> Raw:
    rels: list[str] = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        imgs = sorted(f for f in files if f.lower().endswith(IMAGE_SUFFIXES))
        if not imgs and not dirs and Path(root) != path:
            raise DataError(f"class folder {root} has no images (.jpg, .jpeg, .png)")
        rels.extend(str(PurePosixPath(Path(root).relative_to(path).as_posix(), f)) for f in imgs)
    layout = _split_layout(rels, str(path))
    decoded: dict[str, np.ndarray] = {}
    expect: tuple[int, int] | None = None
    for rel in sorted(rels):
        file = path / rel
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read image {file}: {exc.strerror}") from None
        arr = _decode(data, str(file), expect)
        expect = expect or arr.shape[:2]
        decoded[rel] = arr
    return _assemble(layout, decoded, str(path))


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"cannot read archive {path}: {exc} (corrupt or truncated?)") from None


def _load_tar(path: Path) -> Raw:
    decoded: dict[str, np.ndarray] = {}
    dirs: set[str] = set()
    expect: tuple[int, int] | None = None
    try:
        with _open_tar(path) as tf:
            for m in tf:  # one sequential pass: cheap on a .tar.gz
                name = m.name.removeprefix("./")
                if m.isdir():
                    dirs.add(name.rstrip("/"))
                    continue
                if not m.isfile() or not name.lower().endswith(IMAGE_SUFFIXES):
                    continue
                fobj = tf.extractfile(m)
                if fobj is None:
                    continue
                arr = _decode(fobj.read(), f"{path}:{name}", expect)
                expect = expect or arr.shape[:2]
                decoded[name] = arr
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"cannot read archive {path}: {exc} (corrupt or truncated?)") from None
    # a directory entry with no image below it is an empty class folder
    parents = {str(PurePosixPath(n).parent) for n in decoded}
    for d in sorted(dirs):
        if d in parents:
            continue
        if not any(p.startswith(d + "/") for p in parents):
            raise DataError(f"class folder {path}:{d} has no images (.jpg, .jpeg, .png)")
    layout = _split_layout(sorted(decoded), str(path))
    return _assemble(layout, decoded, str(path))


# ---------------------------------------------------------------------- CIFAR-10 releases
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 python batches and nothing else: only numpy arrays are allowed."""

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _cifar_members(path: Path, names: Sequence[str]) -> dict[str, bytes]:
    """The files called ``names`` (by base name) from a folder or an archive."""
    found: dict[str, bytes] = {}
    if path.is_dir():
        for n in names:
            hits = sorted(path.rglob(n))
            if hits:
                found[n] = hits[0].read_bytes()
        return found
    try:
        with _open_tar(path) as tf:
            for m in tf:
                base = PurePosixPath(m.name).name
                if m.isfile() and base in names and base not in found:
                    f = tf.extractfile(m)
                    if f is not None:
                        found[base] = f.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"cannot read archive {path}: {exc} (corrupt or truncated?)") from None
    return found


def _load_cifar_python(path: Path) -> Raw:
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    files = _cifar_members(path, [*train_names, "test_batch", "batches.meta"])

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            d = _ArrayUnpickler(io.BytesIO(files[name]), encoding="bytes").load()
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as exc:
            raise DataError(f"{path}: CIFAR-10 batch {name} is corrupt ({exc})") from None
        return x.transpose(0, 2, 3, 1), y

    missing = [n for n in [*train_names, "test_batch"] if n not in files]
    if missing:
        raise DataError(f"{path}: CIFAR-10 python batches missing: {missing}")
    parts = [read(n) for n in train_names]
    te_x, te_y = read("test_batch")
    classes = list(_CIFAR_CLASSES)
    if "batches.meta" in files:
        try:
            meta = _ArrayUnpickler(io.BytesIO(files["batches.meta"]), encoding="bytes").load()
            classes = [c.decode() for c in meta[b"label_names"]]
        except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError,
                AttributeError):
            pass
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            te_x, te_y, classes)


def _load_cifar_binary(path: Path) -> Raw:
    train_names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    files = _cifar_members(path, [*train_names, "test_batch.bin", "batches.meta.txt"])
    missing = [n for n in [*train_names, "test_batch.bin"] if n not in files]
    if missing:
        raise DataError(f"{path}: CIFAR-10 binary batches missing: {missing}")

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        buf = np.frombuffer(files[name], dtype=np.uint8)
        if buf.size == 0 or buf.size % 3073:
            raise DataError(f"{path}: CIFAR-10 batch {name} has {buf.size} bytes, not a "
                            "multiple of 3073 (1 label + 32x32x3 pixels); corrupt or truncated")
        rec = buf.reshape(-1, 3073)
        y = rec[:, 0].astype(np.int64)
        x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), y

    parts = [read(n) for n in train_names]
    te_x, te_y = read("test_batch.bin")
    classes = list(_CIFAR_CLASSES)
    if "batches.meta.txt" in files:
        names = [s.strip() for s in files["batches.meta.txt"].decode(errors="replace").split()]
        if len(names) >= int(max(te_y.max(), parts[0][1].max())) + 1:
            classes = names
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            te_x, te_y, classes)


# ---------------------------------------------------------------------- npz, digits
def _as_nhwc(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{where} must be 4-D images (n, h, w, c) or (n, c, h, w), got shape "
                        f"{x.shape}")
    if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    if x.shape[-1] not in (1, 3):
        raise DataError(f"{where} must have 1 or 3 channels, got shape {x.shape}")
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating) and x.size and float(np.nanmax(x)) <= 1.0:
            x = np.round(x * 255.0)
        if not np.all(np.isfinite(x)) or x.min(initial=0) < 0 or x.max(initial=0) > 255:
            raise DataError(f"{where} must be uint8 pixels (or floats in [0, 1]), got dtype "
                            f"{x.dtype} with values outside [0, 255]")
        x = x.astype(np.uint8)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)


def _load_npz(path: Path) -> Raw:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zlib.error, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc} (not an .npz file or corrupt)") from None
    with z:
        keys = set(z.files)
        for k in ("x_train", "y_train"):
            if k not in keys:
                raise DataError(f"{path} has no array {k!r}; expected x_train, y_train, x_test, "
                                f"y_test (found {sorted(keys)})")
        try:
            tr_x = _as_nhwc(z["x_train"], f"{path}: x_train")
            tr_y = np.asarray(z["y_train"]).astype(np.int64).ravel()
            te_x = te_y = None
            if "x_test" in keys and "y_test" in keys:
                te_x = _as_nhwc(z["x_test"], f"{path}: x_test")
                te_y = np.asarray(z["y_test"]).astype(np.int64).ravel()
            classes = ([str(c) for c in z["classes"]] if "classes" in keys else [])
        except (ValueError, zlib.error, EOFError) as exc:
            raise DataError(f"cannot read {path}: {exc} (corrupt?)") from None
    n_cls = int(max(tr_y.max(initial=0), te_y.max(initial=0) if te_y is not None else 0)) + 1
    return tr_x, tr_y, te_x, te_y, classes or [str(i) for i in range(n_cls)]


def _load_digits(size: int) -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) * (255.0 / 16.0))[:, None]  # (n, 1, 8, 8)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x8 = x.clamp(0, 255).round().to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1)
    xa = np.ascontiguousarray(x8.numpy())
    y = np.asarray(d.target, dtype=np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    n_test = len(y) // 5
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return xa[tr], y[tr], xa[te], y[te], [str(i) for i in range(10)]


_LOADERS = {
    "folder": _load_folder,
    "tar": _load_tar,
    "cifar-python": _load_cifar_python,
    "cifar-binary": _load_cifar_binary,
    "npz": _load_npz,
}


def _check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise DataError(f"{where}: images must be (n, h, w, 3) uint8, got {x.shape} {x.dtype}")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{where}: no images")
    if y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, got {int(y.min())}")


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

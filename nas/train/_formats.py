"""Image dataset formats: the registry :data:`DATA_FORMATS`, one small class per format.

A format is a plug-in of the one contract (:mod:`nas._plugin`): a ``name`` (the ``format:``
of a training config), a one-line ``description``, and three class methods:

``detect(source) -> bool``
    whether ``source`` is of this format (asked in ``priority`` order by
    :func:`detect_format`; never raises for a source that is not its own, only for one that is
    broken);
``load(source, image_size=...) -> Raw``
    ``(train_x, train_y, test_x, test_y, classes)`` as uint8 NHWC arrays and int64 labels,
    one :class:`~nas.errors.DataError` naming the path for any problem with the input;
``example(folder) -> source``
    a tiny valid source written in ``folder``, on which the registry's checks
    (:mod:`nas.train._format_checks`) run ``detect`` and ``load``: a format of another
    package is checked the same way.

A format's ``modality`` says what it holds: ``images`` (``load`` gives :data:`Raw`) or
``text`` (``load_text`` gives a :class:`TextCorpus`, whole works of UTF-8 text, for the
language models of the ``gpt`` family; ``load`` refuses in one line).

See :mod:`nas.train._data` for what each built-in format holds. Decoding is Pillow's; caching,
the validation slice and batching are :mod:`nas.train._data`'s.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from nas._io import MAX_READ_BYTES, read_bytes
from nas._plugin import Plugin
from nas._registry import Registry
from nas.errors import DataError, MissingDependencyError

__all__ = ["DATA_FORMATS", "FORMATS", "IMAGE_SUFFIXES", "DataFormat", "Raw", "TextCorpus",
           "check_arrays", "detect_format", "load_digits"]

#: the built-in formats' names (every registered one: ``DATA_FORMATS.names()``)
FORMATS = ("folder", "tar", "cifar-python", "cifar-binary", "npz", "digits", "lm-text")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                  "ship", "truck")

#: what a reader returns: train images and labels, test images and labels (or None), classes
Raw = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str]]


@dataclass(frozen=True)
class TextCorpus:
    """What a text format's ``load_text`` returns: whole works, each ``(name, text)``, in
    name order (a work is the unit a train/validation split keeps whole)."""

    works: tuple[tuple[str, str], ...]
    source: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.works)


class DataFormat(Plugin):
    """Base of the dataset formats (see the module docstring)."""

    #: asked by :func:`detect_format` in increasing order (then by name): specific formats
    #: before the catch-all ``folder``
    priority: ClassVar[int] = 50
    #: the source is a path (False: a name, such as ``digits``)
    needs_path: ClassVar[bool] = True
    #: decoding is slow enough that :func:`~nas.train.load_dataset` caches the arrays
    cache_decoded: ClassVar[bool] = False
    #: what the format holds: ``images`` (``load``) or ``text`` (``load_text``)
    modality: ClassVar[str] = "images"

    @classmethod
    def detect(cls, source: str | Path) -> bool:
        """Whether ``source`` is of this format.

        Raises:
            DataError: a source of this kind that cannot be read (a corrupt archive).
        """
        raise NotImplementedError

    @classmethod
    def load(cls, source: str | Path, *, image_size: int = 32) -> Raw:
        """The images of ``source`` (``image_size``: the side of formats that make images of
        a chosen size, such as ``digits``; the others ignore it).

        Raises:
            DataError: naming the path, for any problem with the input.
        """
        raise NotImplementedError

    @classmethod
    def load_text(cls, source: str | Path) -> TextCorpus:
        """The works of a text source (formats of ``modality`` ``text``).

        Raises:
            DataError: naming the path, for any problem with the input.
        """
        raise DataError(f"data format {cls.name!r} holds {cls.modality}, not text; a language "
                        f"model reads the text format(s) {_of_modality('text')}")

    @classmethod
    def example(cls, folder: Path) -> str | Path:
        """Write a tiny valid source in ``folder`` (which exists) and return it."""
        raise NotImplementedError


def _of_modality(modality: str) -> list[str]:
    return [n for n, c in DATA_FORMATS.items() if c.modality == modality]


#: The formats, by name; filled by ``@DATA_FORMATS.register`` on each class.
DATA_FORMATS: Registry[type[DataFormat]] = Registry(
    "data format", checks="nas.train._format_checks:CHECKS",
)


def detect_format(source: str | Path) -> str:
    """The format of ``source``: the first of :data:`DATA_FORMATS` (by ``priority``) whose
    ``detect`` says so.

    Raises:
        DataError: a missing path, a corrupt archive, or a source no format recognises.
    """
    formats = sorted(DATA_FORMATS.items(), key=lambda kv: (kv[1].priority, kv[0]))
    for name, cls in formats:
        if not cls.needs_path and cls.detect(source):
            return name
    path = Path(source)
    if not path.exists():
        raise DataError(f"data source not found: {path} (relative paths are relative to the "
                        f"working directory {Path.cwd()})")
    for name, cls in formats:
        if cls.needs_path and cls.detect(path):
            return name
    if _tar_marker(path) == "none":
        raise DataError(f"archive {path} holds no images and no CIFAR-10 batches")
    raise DataError(f"cannot tell the format of {path}; set data format to one of "
                    f"{DATA_FORMATS.names()}")


def _archive_error(path: Path, exc: BaseException) -> DataError:
    """The one line of an archive that does not read (tarfile's own message lists what each
    compression said, a line each: joined here)."""
    said = "; ".join(line.strip().lstrip("- ") for line in str(exc).splitlines()
                     if line.strip())
    return DataError(f"cannot read archive {path}: {said} (corrupt or truncated?)")


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _tar_marker(path: Path) -> str | None:
    """What a tar archive holds first: ``"data_batch_1.bin"``, ``"data_batch_1"``,
    ``"image"``, ``"none"`` (an archive of none of these), or None (not an archive).
    One pass, shared by the formats that ask (cached per file version)."""
    if not path.is_file():
        return None
    return _tar_marker_of(*_stamp(path))


@lru_cache(maxsize=16)
def _tar_marker_of(path_s: str, mtime_ns: int, size: int) -> str | None:
    path = Path(path_s)
    try:
        is_tar = tarfile.is_tarfile(path)
    except (EOFError, OSError, zlib.error):  # a truncated or corrupt compressed archive
        is_tar = False
    if not (is_tar or path.name.endswith((".tar", ".tar.gz", ".tgz"))):
        return None
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                base = PurePosixPath(m.name).name
                if base in ("data_batch_1.bin", "data_batch_1"):
                    return base
                if base.lower().endswith(IMAGE_SUFFIXES):
                    return "image"
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _archive_error(path, exc) from None
    return "none"


@lru_cache(maxsize=16)
def _cifar_in_folder(path_s: str, mtime_ns: int, size: int) -> str | None:
    """One walk of a folder for the two CIFAR-10 releases' first batch (cached while the
    folder is unchanged: both releases' formats ask)."""
    names = {p.name for p in Path(path_s).rglob("*data_batch_1*")}
    return next((m for m in ("data_batch_1.bin", "data_batch_1") if m in names), None)


def _cifar_in(path: Path) -> str | None:
    """``"data_batch_1.bin"`` or ``"data_batch_1"`` when ``path`` (a folder or an archive)
    holds CIFAR-10 batches of that release, else None."""
    if path.is_dir():
        return _cifar_in_folder(*_stamp(path))
    marker = _tar_marker(path)
    return marker if marker in ("data_batch_1.bin", "data_batch_1") else None


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
        raise _archive_error(path, exc) from None


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
        raise _archive_error(path, exc) from None
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
        raise _archive_error(path, exc) from None
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


def load_digits(size: int) -> Raw:
    import torch
    import torch.nn.functional as F
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


def check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise DataError(f"{where}: images must be (n, h, w, 3) uint8, got {x.shape} {x.dtype}")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{where}: no images")
    if y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, got {int(y.min())}")


# ---------------------------------------------------------------------- the formats
def _write_pngs(root: Path, n: int = 2, size: int = 8) -> None:
    """``root/<class>/<i>.png`` for two classes, random pixels (the examples' images)."""
    image_mod = _pil()
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            image_mod.fromarray(pixels).save(root / c / f"{i}.png")


@DATA_FORMATS.register
class FolderFormat(DataFormat):
    """``root/<class>/*.jpg|png``, or ``root/train|test/<class>/...``."""

    name = "folder"
    description = "an image folder: root/<class>/*.jpg|png, or with train/ and test/ splits"
    priority = 90  # any folder that no other format claims
    cache_decoded = True

    @classmethod
    def detect(cls, source: str | Path) -> bool:
        return Path(source).is_dir()

    @classmethod
    def load(cls, source: str | Path, *, image_size: int = 32) -> Raw:
        return _load_folder(Path(source))

    @classmethod
    def example(cls, folder: Path) -> Path:
        _write_pngs(folder / "images")
        return folder / "images"


@DATA_FORMATS.register
class TarFormat(DataFormat):
    """The image-folder layout read straight from a ``.tar`` / ``.tar.gz`` archive."""

    name = "tar"
    description = "an image folder's layout in a .tar or .tar.gz archive, read without unpacking"
    priority = 60
    cache_decoded = True

    @classmethod
    def detect(cls, source: str | Path) -> bool:
        return _tar_marker(Path(source)) == "image"

    @classmethod
    def load(cls, source: str | Path, *, image_size: int = 32) -> Raw:
        return _load_tar(Path(source))

    @classmethod
    def example(cls, folder: Path) -> Path:
        _write_pngs(folder / "images")
        out = folder / "images.tar.gz"
        with tarfile.open(out, "w:gz") as tf:
            tf.add(folder / "images", arcname="images")
        return out


def _cifar_example(folder: Path, binary: bool) -> Path:
    """The release's six batches, one image each (and the python release's label names)."""
    rng = np.random.default_rng(0)
    d = folder / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
    d.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        label = int(rng.integers(0, 10))
        pixels = rng.integers(0, 256, 3072, dtype=np.uint8)
        if binary:
            (d / f"{name}.bin").write_bytes(bytes([label]) + pixels.tobytes())
        else:
            batch = {b"data": pixels[None], b"labels": [label]}
            (d / name).write_bytes(pickle.dumps(batch))
    return d


@DATA_FORMATS.register
class CifarPythonFormat(DataFormat):
    """CIFAR-10's python release (``cifar-10-batches-py``), a folder or its archive."""

    name = "cifar-python"
    description = "CIFAR-10's python release (cifar-10-batches-py), a folder or its .tar.gz"
    priority = 10

    @classmethod
    def detect(cls, source: str | Path) -> bool:
        return _cifar_in(Path(source)) == "data_batch_1"

    @classmethod
    def load(cls, source: str | Path, *, image_size: int = 32) -> Raw:
        return _load_cifar_python(Path(source))

    @classmethod
    def example(cls, folder: Path) -> Path:
        return _cifar_example(folder, binary=False)


@DATA_FORMATS.register
class CifarBinaryFormat(DataFormat):
    """CIFAR-10's binary release (``cifar-10-batches-bin``), a folder or its archive."""

    name = "cifar-binary"
    description = "CIFAR-10's binary release (cifar-10-batches-bin), a folder or its .tar.gz"
    priority = 10

    @classmethod
    def detect(cls, source: str | Path) -> bool:
        return _cifar_in(Path(source)) == "data_batch_1.bin"

    @classmethod
    def load(cls, source: str | Path, *, image_size: int = 32) -> Raw:
        return _load_cifar_binary(Path(source))

    @classmethod
    def example(cls, folder: Path) -> Path:
        return _cifar_example(folder, binary=True)


@DATA_FORMATS.register
class NpzFormat(DataFormat):
    """A NumPy ``.npz`` of ``x_train, y_train`` (and ``x_test, y_test``, ``classes``)."""

    name = "npz"
    description = "a NumPy .npz of x_train, y_train (optionally x_test, y_test, classes)"
    priority = 20

    @classmethod
    def detect(cls, source: str | Path) -> bool:
        return Path(source).suffix == ".npz" and not Path(source).is_dir()

    @classmethod
    def load(cls, source: str | Path, *, image_size: int = 32) -> Raw:
        return _load_npz(Path(source))

    @classmethod
    def example(cls, folder: Path) -> Path:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
        y = np.arange(6) % 2
        np.savez(folder / "tiny.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
        return folder / "tiny.npz"


@DATA_FORMATS.register
class DigitsFormat(DataFormat):
    """scikit-learn's bundled 8x8 digits (``source: digits``, no file)."""

    name = "digits"
    description = "scikit-learn's bundled 8x8 digits, upscaled (source: digits, no file)"
    priority = 0
    needs_path = False

    @classmethod
    def detect(cls, source: str | Path) -> bool:
        return str(source) == "digits"

    @classmethod
    def load(cls, source: str | Path, *, image_size: int = 32) -> Raw:
        return load_digits(image_size)

    @classmethod
    def example(cls, folder: Path) -> str:
        return "digits"


# ---------------------------------------------------------------------- text
TEXT_SUFFIX = ".txt"


def _text_members(path: Path) -> list[str] | None:
    """The ``.txt`` files of an archive that holds no images (None: not such an archive)."""
    if not path.is_file() or _tar_marker(path) != "none":
        return None
    return _text_members_of(*_stamp(path))


@lru_cache(maxsize=16)
def _text_members_of(path_s: str, mtime_ns: int, size: int) -> list[str] | None:
    try:
        with tarfile.open(path_s, "r:*") as tf:
            names = [m.name for m in tf if m.isfile() and m.name.endswith(TEXT_SUFFIX)]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _archive_error(Path(path_s), exc) from None
    return names or None


def _work_name(member: str) -> str:
    return PurePosixPath(member).name.removesuffix(TEXT_SUFFIX)


def _decode_text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def _load_text(path: Path) -> TextCorpus:
    works: dict[str, str] = {}
    if path.is_dir():
        files = sorted(path.rglob(f"*{TEXT_SUFFIX}"))
        if not files:
            raise DataError(f"text folder {path} holds no {TEXT_SUFFIX} files")
        for f in files:
            data = read_bytes(f, "text file", error=DataError)  # bounded: not /dev/zero's end
            works[_work_name(f.name)] = _decode_text(data, str(f))
    else:
        try:
            with _open_tar(path) as tf:
                for m in tf:
                    if not (m.isfile() and m.name.endswith(TEXT_SUFFIX)):
                        continue
                    if m.size > MAX_READ_BYTES:
                        raise DataError(f"{path}:{m.name} is larger than "
                                        f"{MAX_READ_BYTES >> 20} MiB, the most read of one work")
                    fobj = tf.extractfile(m)
                    if fobj is not None:
                        works[_work_name(m.name)] = _decode_text(fobj.read(),
                                                                 f"{path}:{m.name}")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise _archive_error(path, exc) from None
        if not works:
            raise DataError(f"archive {path} holds no {TEXT_SUFFIX} files")
    empty = sorted(n for n, t in works.items() if not t.strip())
    if empty:
        raise DataError(f"{path}: work(s) {empty} are empty")
    return TextCorpus(tuple(sorted(works.items())), str(path))


@DATA_FORMATS.register
class TextFormat(DataFormat):
    """Whole works of UTF-8 text, one ``.txt`` file each, in a folder or a ``.tar`` /
    ``.tar.gz`` archive (read without unpacking), e.g. ``shakespeare/<work>_gut.txt``."""

    name = "lm-text"
    description = ("UTF-8 text, one .txt file per work, in a folder or a .tar/.tar.gz archive "
                   "(language models)")
    priority = 40
    modality = "text"

    @classmethod
    def detect(cls, source: str | Path) -> bool:
        path = Path(source)
        if path.is_dir():
            has_text = next(path.rglob(f"*{TEXT_SUFFIX}"), None) is not None
            has_images = any(next(path.rglob(f"*{s}"), None) is not None
                             for s in IMAGE_SUFFIXES)
            return has_text and not has_images
        return _text_members(path) is not None

    @classmethod
    def load(cls, source: str | Path, *, image_size: int = 32) -> Raw:
        raise DataError(f"{source} is a text corpus (format 'lm-text'), not images; it trains the "
                        "language models of the gpt family")

    @classmethod
    def load_text(cls, source: str | Path) -> TextCorpus:
        path = Path(source)
        if not path.exists():
            raise DataError(f"text corpus not found: {path} (relative paths are relative to "
                            f"the working directory {Path.cwd()})")
        return _load_text(path)

    @classmethod
    def example(cls, folder: Path) -> Path:
        root = folder / "works"
        root.mkdir()
        (root / "one_gut.txt").write_text("To be, or not to be.\n", encoding="utf-8")
        (root / "two_gut.txt").write_text("All the world's a stage.\n", encoding="utf-8")
        out = folder / "works.tar.gz"
        with tarfile.open(out, "w:gz") as tf:
            tf.add(root, arcname="works")
        return out

"""What every dataset format must do beyond the shared plug-in contract: the registry's own
checks (``Registry(checks=...)`` of :data:`~nas.train.DATA_FORMATS`), run by
:mod:`nas.testing` on the built-in formats and on any a plug-in package registers.

Each check writes the format's own tiny sample (``example(folder)``) in a temporary folder,
runs ``detect`` and ``load`` on it, and raises ``AssertionError`` naming what is wrong.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from nas.errors import DataError
from nas.train._formats import DataFormat, TextCorpus, check_arrays, detect_format

__all__ = ["CHECKS"]


def _expect(ok: object, message: str) -> None:
    # an explicit raise, not `assert`: the checks must hold under `python -O` too
    if not ok:
        raise AssertionError(message)


@contextmanager
def _folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nas-format-check-") as tmp:
        yield Path(tmp)


def check_is_a_data_format(cls: type[DataFormat]) -> None:
    """A :class:`~nas.train.DataFormat` subclass."""
    _expect(isinstance(cls, type) and issubclass(cls, DataFormat),
            f"{cls!r} is not a DataFormat subclass")


def check_detects_its_example(cls: type[DataFormat]) -> None:
    """``detect`` says yes to the format's own sample, and so does automatic detection
    (no format asked before it claims the sample)."""
    with _folder() as tmp:
        src = cls.example(tmp)
        _expect(cls.detect(src), f"{cls.name}.detect() says no to its own example {src}")
        try:
            got = detect_format(src)
        except DataError as exc:
            raise AssertionError(f"automatic detection of {cls.name}'s example {src}: "
                                 f"{exc}") from None
        _expect(got == cls.name, f"automatic detection takes {cls.name}'s example {src} for "
                f"format {got!r}")


def check_refuses_what_is_not_its_own(cls: type[DataFormat]) -> None:
    """``detect`` says no, without raising, to a missing path and to a text file."""
    with _folder() as tmp:
        note = tmp / "notes.txt"
        note.write_text("not a dataset\n")
        for src in (tmp / "missing.xyz", note):
            try:
                ok = cls.detect(src)
            except Exception as exc:
                raise AssertionError(f"{cls.name}.detect({src.name!r}) raised "
                                     f"{type(exc).__name__}: {exc}") from None
            _expect(not ok, f"{cls.name}.detect() says yes to {src.name!r}")


def check_loads_its_example(cls: type[DataFormat]) -> None:
    """``load`` gives ``(train_x, train_y, test_x, test_y, classes)``: uint8 ``(n, h, w, 3)``
    images, int64 labels within the classes, a test set of the same image size or none; a
    text format's ``load_text`` gives a :class:`~nas.train.TextCorpus` of named, non-empty
    works in name order."""
    if cls.modality == "text":
        with _folder() as tmp:
            corpus = cls.load_text(cls.example(tmp))
        _expect(isinstance(corpus, TextCorpus) and corpus.works,
                f"{cls.name}.load_text() gave {corpus!r}, not a TextCorpus with works")
        _expect(all(isinstance(n, str) and isinstance(t, str) and n and t
                    for n, t in corpus.works), f"{cls.name}.load_text(): a work without a "
                "name or text")
        _expect(list(corpus.names) == sorted(set(corpus.names)),
                f"{cls.name}.load_text(): works not in name order or named twice")
        return
    _expect(cls.modality == "images", f"{cls.name}.modality is {cls.modality!r}, not "
            "'images' or 'text'")
    with _folder() as tmp:
        src = cls.example(tmp)
        raw = cls.load(src, image_size=16)
    _expect(isinstance(raw, tuple) and len(raw) == 5,
            f"{cls.name}.load() gave {type(raw).__name__}, not a 5-tuple (Raw)")
    tr_x, tr_y, te_x, te_y, classes = raw
    _expect(isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes),
            f"{cls.name}.load(): classes must be a non-empty list of str, got {classes!r}")
    _expect((te_x is None) == (te_y is None),
            f"{cls.name}.load(): test images without labels, or labels without images")
    try:
        check_arrays(np.asarray(tr_x), np.asarray(tr_y), f"{cls.name} (train)")
        if te_x is not None and te_y is not None:
            check_arrays(np.asarray(te_x), np.asarray(te_y), f"{cls.name} (test)")
            _expect(te_x.shape[1:] == tr_x.shape[1:], f"{cls.name}.load(): test images "
                    f"{te_x.shape[1:]}, train images {tr_x.shape[1:]}")
    except DataError as exc:
        raise AssertionError(f"{cls.name}.load() of its example: {exc}") from None
    for y in (tr_y, te_y):
        if y is not None:
            _expect(np.asarray(y).dtype == np.int64 and int(np.max(y)) < len(classes),
                    f"{cls.name}.load(): labels must be int64 in [0, {len(classes)})")


def check_a_broken_source_is_one_data_error(cls: type[DataFormat]) -> None:
    """Loading an empty file raises :class:`~nas.errors.DataError` (one line naming it),
    nothing else (formats whose source is not a path are exempt)."""
    if not cls.needs_path:
        return
    with _folder() as tmp:
        empty = tmp / "empty.bin"
        empty.write_bytes(b"")
        try:
            if cls.modality == "text":
                cls.load_text(empty)
            else:
                cls.load(empty)
        except DataError as exc:
            _expect("\n" not in str(exc), f"{cls.name}.load(): a multi-line error: {exc}")
            return
        except Exception as exc:
            raise AssertionError(f"{cls.name}.load() of an empty file raised "
                                 f"{type(exc).__name__}, not DataError: {exc}") from None
    raise AssertionError(f"{cls.name}.load() took an empty file")


#: the checks of every dataset format, in order
CHECKS: tuple[Callable[[type[DataFormat]], None], ...] = (
    check_is_a_data_format, check_detects_its_example, check_refuses_what_is_not_its_own,
    check_loads_its_example, check_a_broken_source_is_one_data_error,
)

"""File and URL helpers every package shares: atomic writes, reads that fail in one line,
file digests and password masking.

Atomic writes go to a temporary file in the target's folder and ``os.replace`` it into place,
so a reader (or a process killed halfway) sees the old file or the new one, never half of
one. Reads turn ``OSError`` and bad encodings into the caller's error class with one line that
names the file, so no traceback reaches a user for a missing or unreadable file.

Every file read whole is read through :func:`read_bytes`, which stops at a size cap
(:data:`MAX_READ_BYTES`, 64 MiB, unless the caller names another): configurations,
architectures, manifests and predictors are kilobytes to a few megabytes, and a path such as
``/dev/zero``, a FIFO or a wrong multi-gigabyte file is refused in one line at once instead of
being read until memory runs out. Files hashed (:func:`sha256_file`) must be regular files.
YAML mappings with a key given twice are refused (PyYAML keeps the last one silently).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from nas.errors import ConfigError, NASError

__all__ = [
    "MAX_MODEL_BYTES",
    "MAX_READ_BYTES",
    "atomic_new_file",
    "atomic_path",
    "atomic_write",
    "check_output_file",
    "check_path",
    "mask_url",
    "read_bytes",
    "read_text",
    "read_yaml",
    "sha256_file",
]


@contextlib.contextmanager
def atomic_path(path: Path | str, *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    For writers that want a file name (``torch.save``, ``to_parquet``, ``safetensors``). On
    any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_new_file(path: Path | str, *, mode: int = 0o644) -> Iterator[Path]:
    """:func:`atomic_path`, and on failure the folders it created for ``path`` are removed
    again: a failed write leaves neither a file nor folders behind."""
    path = Path(path)
    missing = [p for p in path.parents if not p.exists()]  # deepest first
    try:
        with atomic_path(path, mode=mode) as tmp:
            yield tmp
    except BaseException:
        for folder in missing:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def check_output_file(path: Path | str, what: str, *, example: str,
                      error: type[NASError] = ConfigError) -> Path:
    """``path`` as a file to write, normalised as the operating system will not (``new/..``
    is the working folder and creates no ``new/``); refused in one ``error`` line when it is
    a folder or a file stands where one of its folders should be."""
    path = check_path(os.path.normpath(path), what, error=error)
    if path.is_dir():
        raise error(f"{what} {path} is a folder; name a file to write (e.g. {example})")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise error(f"cannot write {what} {path}: {blocking} is a file, not a folder")
    return path


def atomic_write(path: Path | str, data: str | bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path, mode=mode) as tmp, open(tmp, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def check_path(path: Path | str, what: str = "path", *,
               error: type[NASError] = ConfigError) -> Path:
    """``path``, if the operating system can name it at all.

    ``Path.exists()``, ``is_file()`` and ``is_dir()`` answer False for a missing file but
    raise for a name the system refuses: a component over ``NAME_MAX`` bytes (255 on
    Linux), a path over ``PATH_MAX``, a NUL byte. Checked once at the boundary, such a path is
    one ``error`` line instead of an ``OSError`` from the first of those calls.
    """
    path = Path(path)
    shown = str(path) if len(str(path)) <= 80 else str(path)[:77] + "..."
    try:
        os.lstat(path)
    except ValueError:  # embedded NUL
        raise error(f"{what} {shown!r} contains a NUL byte") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise error(f"{what} {shown} is too long a name for the file system "
                        f"({exc.strerror})") from None
    return path


#: the most bytes read from one file read whole (configurations, architecture files, JSON and
#: YAML): 30 times the largest the package ships (OFA's accuracy predictor as JSON, 2 MB)
MAX_READ_BYTES = 64 << 20
#: the most bytes read from one model file read whole (an ONNX model, a Once-for-All
#: checkpoint): ONNX's own limit of a model in one file (protobuf's 2 GiB)
MAX_MODEL_BYTES = 2 << 30


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


def _open_error(path: Path, what: str, exc: OSError, error: type[NASError]) -> NASError:
    if isinstance(exc, FileNotFoundError):
        return error(f"{what} not found: {path}")
    if isinstance(exc, IsADirectoryError):
        return error(f"{what} {path} is a directory, not a file")
    return error(f"cannot read {what} {path}: {exc.strerror or exc}")


def read_bytes(path: Path | str, what: str = "file", *,
               error: type[NASError] = ConfigError, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them.

    A missing or unreadable file, or one larger than ``limit``, raises ``error`` in one line;
    a regular file is measured before it is read. Anything else (``/dev/zero``, a pipe) is
    read up to ``min(limit, MAX_READ_BYTES)``, never to its end.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                limit = min(limit, MAX_READ_BYTES)
            elif info.st_size > limit:
                raise error(f"{what} {path} is larger than {_size(limit)}, the most read from "
                            "such a file: is it the right one?")
            data = fh.read(limit + 1)
    except OSError as exc:
        raise _open_error(path, what, exc, error) from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than {_size(limit)}, the most read from such a "
                    "file: is it the right one?")
    return data


def read_text(path: Path | str, what: str = "file", *,
              error: type[NASError] = ConfigError, limit: int = MAX_READ_BYTES) -> str:
    """The UTF-8 text of ``path``; missing, unreadable, over ``limit`` bytes or not UTF-8
    raises ``error``."""
    path = Path(path)
    data = read_bytes(path, what, error=error, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(f"key {key!r} is given twice")
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that gives one key twice (PyYAML keeps the
    last silently, so a typo'd override wins unseen). Keys merged in by ``<<`` may be
    overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                except TypeError:  # an unhashable key: construct_mapping refuses it itself
                    continue
                seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


def read_yaml(path: Path | str, what: str = "file", *,
              error: type[NASError] = ConfigError) -> Any:
    """The YAML document in ``path`` (safe loader); bad YAML names the line, a key given
    twice in one mapping names the key and both lines."""
    path = Path(path)
    text = read_text(path, what, error=error)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a safe loader (no Python tags)
    except _DuplicateKey as exc:
        lines = (f"line {exc.first}" if exc.first == exc.again
                 else f"lines {exc.first} and {exc.again}")
        raise error(f"{what} {path}: key {exc.key!r} is given twice ({lines}); keep "
                    "one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{what} {path} is not valid YAML{where}") from None
    except RecursionError:  # PyYAML's parser recurses once per level of nesting
        raise error(f"{what} {path} is not valid YAML (nested too deep)") from None
    except ValueError:  # an int of more digits than Python converts (sys.int_info)
        raise error(f"{what} {path} is not valid YAML (a number of over "
                    f"{sys.get_int_max_str_digits()} digits)") from None


def sha256_file(path: Path | str, what: str = "file", *,
                error: type[NASError] = ConfigError) -> str:
    """The sha256 of a regular file, hex; read in 1 MiB chunks. A device, FIFO or socket
    (``/dev/zero`` has no end) raises ``error``."""
    path = Path(path)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise error(f"{what} {path} is not a regular file")
            _digest_into(h, fh)
    except OSError as exc:
        raise _open_error(path, what, exc, error) from None
    return h.hexdigest()


def _digest_into(h: Any, fh: IO[bytes]) -> None:
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages, logs and tables).

    >>> mask_url("postgresql://me:secret@db/nas")
    'postgresql://me:***@db/nas'
    """
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    if "@" not in netloc:
        return url
    cred, host = netloc.rsplit("@", 1)
    user, colon, _ = cred.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}{sep}{tail}"

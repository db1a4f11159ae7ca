"""The one guard of everything a command writes: checked before any work starts.

Every command that writes a file or a folder (``--out``, ``--work``, ...) calls
:func:`check_output` first, with the paths it reads (checkpoints, storages, export folders,
databases) as ``inputs``. The rules, the same for every command:

- an output is never one of the command's inputs, never lies inside one (an input folder),
  and, for a folder, never holds one: paths are compared resolved, symlinks followed, and by
  inode where both exist (a hard link is the same file);
- an output that exists needs ``--overwrite`` (a folder that exists but is empty is no
  output yet); a command without ``--overwrite`` says to choose another path;
- a name the file system refuses, a file where a folder is expected and the reverse are one
  line too.

All of this runs before the command reads its data, trains or measures: a refused output
costs the user nothing. What a command replaces afterwards (an export folder of an export's
own files only, say) stays its own rule, on top of this one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from nas._io import check_path
from nas.errors import ConfigError, NASError

__all__ = ["Input", "check_apart", "check_output", "storage_file"]

#: an input of a command: the option that names it (``"--storage"``) and its path (None: not
#: given, or not a file here, like a PostgreSQL storage)
Input = tuple[str, Path | str | None]

# a scheme, then "://": only that makes a storage a URL (as nas.search reads them)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def storage_file(storage: str | None) -> Path | None:
    """The file behind an Optuna storage, or a latency database: a journal's path or
    ``sqlite:///FILE``'s file; None for a server (``postgresql://...``) or an in-memory one."""
    if not storage:
        return None
    if not _URL.match(storage):
        return Path(storage)
    scheme, _, rest = storage.partition("://")
    if scheme.split("+")[0].lower() != "sqlite":
        return None
    path = rest[1:] if rest.startswith("/") else rest  # sqlite:///rel, sqlite:////abs
    path = path.split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _resolved(path: Path) -> Path:
    # resolve() follows every symlink of the part that exists, so a link to an input is the
    # input; the rest of the path is kept as given
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.resolve()
    except (OSError, RuntimeError):  # a name the system refuses, a symlink loop
        return absolute


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # a hard link, a bind mount
    except OSError:
        return False


def _inside(inner: Path, outer: Path) -> bool:
    return inner != outer and inner.is_relative_to(outer)


def check_apart(out: Path | str, option: str, inputs: Iterable[Input], *, folder: bool = False,
                error: type[NASError] = ConfigError) -> None:
    """Refuse ``out`` if it is one of ``inputs``, lies inside one, or (a ``folder`` the
    command replaces) holds one; whether it exists is the caller's rule."""
    out = Path(out)
    target = _resolved(out)
    for name, given in inputs:
        if given is None or str(given) == "":
            continue
        source = _resolved(Path(given))
        if _same(target, source):
            raise error(f"{option} {out} is also {name} ({given}): writing it would destroy "
                        f"that; choose another {option}")
        if _inside(target, source):
            raise error(f"{option} {out} lies inside {name} {given}; write it elsewhere")
        if folder and _inside(source, target):
            raise error(f"{option} {out} holds {name} {given}; write it elsewhere")


def check_output(
    out: Path | str,
    option: str = "--out",
    *,
    inputs: Iterable[Input] = (),
    overwrite: bool | None = False,
    folder: bool = False,
    example: str | None = None,
    error: type[NASError] = ConfigError,
) -> Path:
    """``out``, checked as the output of a command before it starts; one ``error`` line if not.

    Args:
        out: the path the command will write.
        option: the option that names it, for messages (``--out``, ``--work``).
        inputs: what the command reads, as ``(option, path)``; ``path`` may be None (not
            given), a file or a folder. Another output of the same command (``--work`` of
            ``--out``) goes here too: two outputs must be apart as well.
        overwrite: the command's ``--overwrite`` flag; None when it has none (an existing
            output is then refused with no way round but another path).
        folder: ``out`` is a folder to create (an existing empty one is fine), not a file.
        example: a path to suggest when ``out`` names the wrong kind of thing.
        error: the exception raised (a ``NASError``: the CLI prints one line, exit 2).

    Returns:
        ``out``, normalised (``new/..`` is the working folder and creates no ``new/``).
    """
    inputs = list(inputs)
    path = check_path(os.path.normpath(out), option, error=error)
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise error(f"cannot write {option} {path}: {blocking} is a file, not a folder")
    check_apart(path, option, inputs, folder=folder, error=error)
    if not os.path.lexists(path):
        return path
    if folder:
        if not path.is_dir():
            raise error(f"{option} {path} exists and is not a folder"
                        + (f"; name a new folder (e.g. {example})" if example else ""))
        try:
            empty = next(path.iterdir(), None) is None
        except OSError as exc:
            raise error(f"{option} {path} cannot be read: {exc.strerror or exc}") from None
        if empty:
            return path
        what = "exists and is not empty"
    else:
        if path.is_dir():
            raise error(f"{option} {path} is a folder; name a file to write"
                        + (f" (e.g. {example})" if example else ""))
        what = "exists"
    if overwrite is None:
        raise error(f"{option} {path} {what}; choose a new {'folder' if folder else 'file'}")
    if not overwrite:
        raise error(f"{option} {path} {what}; pass --overwrite to replace it, or choose "
                    f"another {option}")
    return path

"""A small SQLite cache of proxy scores, keyed by (checkpoint sha256, arch hash, proxy key).

The file sits next to the checkpoint (``<checkpoint>.proxies.sqlite``) when that folder is
writable and not inside the package (shipped supernets), else in the cache folder
(``$NAS_CACHE_DIR`` or ``~/.cache/nas``). Scores are
inserted and never changed: the key names everything a score depends on.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from nas._io import sha256_file
from nas._settings import cache_dir
from nas.errors import CheckpointError, DatabaseError

__all__ = ["ProxyCache", "checkpoint_sha256", "default_cache_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    checkpoint TEXT NOT NULL,
    arch TEXT NOT NULL,
    proxy TEXT NOT NULL,
    score REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (checkpoint, arch, proxy)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (path, size, mtime_ns)
);
"""


def default_cache_path(checkpoint: Path | str | None = None) -> Path:
    """Where scores of ``checkpoint`` are cached (see the module docstring)."""
    if checkpoint is not None:
        ck = Path(checkpoint)
        folder = ck.resolve().parent
        shipped = Path(__file__).resolve().parents[1] in folder.parents  # inside nas/
        if os.access(folder, os.W_OK) and not shipped:
            return ck.with_name(ck.name + ".proxies.sqlite")
    return cache_dir() / "proxies.sqlite"


def checkpoint_sha256(path: Path | str) -> str:
    """The sha256 of a checkpoint file, hex (a missing or unreadable one: ``CheckpointError``)."""
    return sha256_file(path, "checkpoint", error=CheckpointError)


class ProxyCache:
    """Scores by (checkpoint, arch hash, proxy key); safe to share between processes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=60)
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"cannot open proxy cache {self.path}: {exc}") from None
        except OSError as exc:
            raise DatabaseError(f"cannot create proxy cache {self.path}: {exc}") from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ProxyCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, checkpoint: str, proxy: str, arch_hashes: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        hashes = list(dict.fromkeys(arch_hashes))
        for i in range(0, len(hashes), 500):
            part = hashes[i : i + 500]
            q = ("SELECT arch, score FROM scores WHERE checkpoint = ? AND proxy = ? AND arch IN "
                 f"({','.join('?' * len(part))})")
            out.update(dict(self._conn.execute(q, [checkpoint, proxy, *part]).fetchall()))
        return out

    def put(self, checkpoint: str, proxy: str, scores: dict[str, float]) -> None:
        now = time.time()
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)",
                [(checkpoint, h, proxy, float(s), now) for h, s in scores.items()],
            )

    def sha256(self, path: Path | str) -> str:
        """``checkpoint_sha256`` remembered by (path, size, mtime)."""
        p = Path(path).resolve()
        try:
            st = p.stat()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint not found: {path}") from None
        key = (str(p), st.st_size, st.st_mtime_ns)
        row = self._conn.execute(
            "SELECT sha256 FROM checkpoints WHERE path = ? AND size = ? AND mtime_ns = ?", key
        ).fetchone()
        if row:
            return str(row[0])
        sha = checkpoint_sha256(p)
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                               (*key, sha))
        return sha

"""One measurement at a time per physical device: a file lock per device's hardware.

Locally the lock is a file under the database's folder (``$NAS_LOCK_DIR`` overrides it), and
all local CPU profiles share the host's lock, since they share its cores; under Ray the
profile's ``ray_resource`` (capacity 1 on its node) does the same job
(:mod:`nas.measure._placement`).
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nas._settings import lock_dir_from_env
from nas.devices import DeviceProfile

__all__ = ["device_lock", "lock_dir_for"]


def lock_dir_for(db: Any) -> Path:
    """Where the lock files of measurements stored in ``db`` live: ``$NAS_LOCK_DIR``, else
    ``locks/`` beside a SQLite file, else a folder under the temporary directory."""
    env = lock_dir_from_env()
    if env is not None:
        return env
    path = getattr(db, "path", None)
    if path is None:
        url = getattr(db, "url", None)
        if url is not None:
            from sqlalchemy.engine import make_url

            u = make_url(str(url))
            if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
                path = u.database
    if path:
        return Path(path).resolve().parent / "locks"
    return Path(tempfile.gettempdir()) / "nas-latency-locks"


def _lock_key(profile: DeviceProfile) -> str:
    # Local profiles differ in settings, not in hardware: they share the host's cores, so
    # they share one lock. External devices are their own hardware.
    if getattr(profile, "external", False) or profile.placement != "local":
        key = profile.ray_resource or profile.name
    else:
        key = f"host-{socket.gethostname()}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


@contextlib.contextmanager
def device_lock(profile: DeviceProfile, lock_dir: Path | str) -> Iterator[Path]:
    """Hold the exclusive file lock of ``profile``'s hardware for one measurement."""
    import fcntl

    folder = Path(lock_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_lock_key(profile)}.lock"
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

"""Every path and ``NAS_*`` environment variable the package reads, in one place.

Library code asks this module, never ``os.environ``, for where things live, so that a reader
finds every knob here and tests can point all of them at a temporary folder.

===================  ==========================================================================
variable             meaning
===================  ==========================================================================
``NAS_DB_URL``       the latency database (a SQLAlchemy URL or a SQLite path)
``NAS_DEVICES_DIR``  where new device profiles are written (and read first)
``NAS_CACHE_DIR``    proxy scores and decoded datasets (default ``$XDG_CACHE_HOME/nas``)
``NAS_LOCK_DIR``     the per-host measurement lock (default: beside the SQLite file)
``RAY_ADDRESS``      the Ray cluster to join (Ray's own variable; default: start one here)
``XDG_CACHE_HOME``   base of caches (default ``~/.cache``)
``XDG_DATA_HOME``    base of user data (default ``~/.local/share``)
===================  ==========================================================================

The service's token, ``NAS_API_TOKEN``, is read by :func:`nas.serve.resolve_token` (through
:func:`env_with_prefix`); its settings are a :class:`~nas._config.ConfigModel` of their own,
:class:`nas.serve.ServiceSettings`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "cache_dir",
    "data_home",
    "db_url_from_env",
    "devices_dir_from_env",
    "env_with_prefix",
    "lock_dir_from_env",
    "ray_address",
    "repo_root",
]


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def repo_root() -> Path:
    """The folder holding the ``nas`` package (the repository in a source checkout)."""
    return Path(__file__).resolve().parent.parent


def data_home() -> Path:
    """``$XDG_DATA_HOME/nas`` (default ``~/.local/share/nas``): user data outside the repo."""
    return Path(_env("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "nas"


def cache_dir() -> Path:
    """``$NAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/nas``, else ``~/.cache/nas``."""
    env = _env("NAS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(_env("XDG_CACHE_HOME") or Path.home() / ".cache") / "nas"


def db_url_from_env() -> str | None:
    """``$NAS_DB_URL`` when set."""
    return _env("NAS_DB_URL")


def devices_dir_from_env() -> Path | None:
    """``$NAS_DEVICES_DIR`` when set."""
    env = _env("NAS_DEVICES_DIR")
    return Path(env).expanduser() if env else None


def lock_dir_from_env() -> Path | None:
    """``$NAS_LOCK_DIR`` when set."""
    env = _env("NAS_LOCK_DIR")
    return Path(env).expanduser() if env else None


def ray_address(address: str | None = None) -> str | None:
    """``address``, else ``$RAY_ADDRESS``, else None (start a local Ray)."""
    return address or _env("RAY_ADDRESS")


def env_with_prefix(prefix: str) -> dict[str, str]:
    """Every environment variable starting with ``prefix`` (``NAS_SERVE_``), prefix kept."""
    return {k: v for k, v in os.environ.items() if k.startswith(prefix)}

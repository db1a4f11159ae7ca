"""Which database: an explicit URL, else ``$NAS_DB_URL``, else a SQLite file of our own."""

from __future__ import annotations

import os
from pathlib import Path

from nas._settings import data_home, db_url_from_env, repo_root

__all__ = ["default_db_url", "resolve_db_url"]


def default_db_url() -> str:
    """``latency_db/latency.sqlite`` of the repository when that folder is writable, else
    ``$XDG_DATA_HOME/nas/latency.sqlite`` (``~/.local/share/nas/latency.sqlite``)."""
    repo_dir = repo_root() / "latency_db"
    if repo_dir.is_dir() and os.access(repo_dir, os.W_OK):
        return f"sqlite:///{repo_dir / 'latency.sqlite'}"
    return f"sqlite:///{data_home() / 'latency.sqlite'}"


def resolve_db_url(url: str | os.PathLike[str] | None = None) -> str:
    """The database URL to use: ``url``, else ``$NAS_DB_URL``, else :func:`default_db_url`.

    A value without ``://`` is taken as the path of a SQLite file.
    """
    if url is None or (isinstance(url, str) and not url.strip()):
        url = db_url_from_env() or default_db_url()
    url = str(url).strip()
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    return url

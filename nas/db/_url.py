"""Which database: an explicit URL, else ``$NAS_DB_URL``, else a SQLite file of our own.

A value is a URL only when it starts with a scheme (``sqlite://``, ``postgresql+psycopg2://``);
anything else is the path of a SQLite file. A path becomes a URL through SQLAlchemy's
``URL.create``, never by pasting it after ``sqlite:///``: a ``?`` in a folder name would start
a query string and ``%41`` would be decoded, and the database would be written elsewhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from nas._io import mask_url
from nas._settings import data_home, db_url_from_env, repo_root

__all__ = ["default_db_url", "is_url", "resolve_db_url", "sqlite_url", "url_for_display"]

# RFC 3986 scheme, then "://": what tells a URL from a path
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(value: str) -> bool:
    """Whether ``value`` is a URL (``scheme://...``) rather than a file path."""
    return bool(_SCHEME.match(value))


def sqlite_url(path: Path | str) -> str:
    """The SQLAlchemy URL of the SQLite file ``path`` (absolute; every character kept).

    >>> sqlite_url("/t/we?ird/lat.sqlite")
    'sqlite:////t/we%3Fird/lat.sqlite'
    """
    # os.path.expanduser on the text as given: pathlib drops a leading "./", so
    # Path("./~/x").expanduser() would be $HOME/x, not the folder named "~" here
    database = str(Path(os.path.expanduser(os.fspath(path))).resolve())
    return URL.create("sqlite", database=database).render_as_string(hide_password=False)


def url_for_display(url: str) -> str:
    """How messages name a database: a SQLite file by its real path, any other URL with its
    password hidden."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return mask_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return str(parsed.database)
    return parsed.render_as_string(hide_password=True)


def default_db_url() -> str:
    """``latency_db/latency.sqlite`` of the repository when that folder is writable, else
    ``$XDG_DATA_HOME/nas/latency.sqlite`` (``~/.local/share/nas/latency.sqlite``)."""
    repo_dir = repo_root() / "latency_db"
    if repo_dir.is_dir() and os.access(repo_dir, os.W_OK):
        return sqlite_url(repo_dir / "latency.sqlite")
    return sqlite_url(data_home() / "latency.sqlite")


def resolve_db_url(url: str | os.PathLike[str] | None = None) -> str:
    """The database URL to use: ``url``, else ``$NAS_DB_URL``, else :func:`default_db_url`.

    A value without a scheme (``xxx://``) is taken as the path of a SQLite file, whatever
    characters it holds.
    """
    if url is None or (isinstance(url, str) and not url.strip()):
        url = db_url_from_env() or default_db_url()
    if isinstance(url, os.PathLike):
        return sqlite_url(os.fspath(url))
    text = url.strip()
    # a path keeps its spaces: only a URL is trimmed
    return text if is_url(text) else sqlite_url(url)

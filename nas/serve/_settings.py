"""The service's settings: where it binds, which databases it reads, its limits and its token."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from nas._config import ConfigModel, format_validation_error
from nas._settings import env_with_prefix
from nas.errors import ConfigError, NASError

__all__ = ["INGRESS_MODES", "ServiceSettings", "check_files", "is_loopback", "resolve_token"]

#: How HTTP reaches the service's replica: ``"direct"`` is Ray Serve's throughput-optimised
#: direct ingress (the replica itself listens on ``host:port``); ``"proxy"`` is Ray Serve's
#: classic path through its HTTP proxy actor (about 4x slower here).
INGRESS_MODES = ("direct", "proxy")

#: Environment variable holding the bearer token.
TOKEN_ENV = "NAS_API_TOKEN"
_MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1,
    ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def resolve_token(host: str, env: Mapping[str, str] | None = None) -> tuple[str | None, bool]:
    """The bearer token the service requires, and whether it was generated here.

    The token comes from ``$NAS_API_TOKEN`` when set (then it is required even on loopback).
    Otherwise a service bound to anything but loopback gets a new random token (it must be
    shown to the user once); a loopback service runs without one.
    """
    source: Mapping[str, str] = env_with_prefix(TOKEN_ENV) if env is None else env
    token = source.get(TOKEN_ENV) or None
    if token is not None:
        return token, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(32), True


#: the integer settings and their bounds (inclusive)
_INT_BOUNDS = {"port": (1, 65535), "max_archs": (1, 100_000),
               "max_body_bytes": (1024, 1 << 30), "max_batch_size": (1, 4096),
               "max_searches": (1, 1024), "max_specialize": (1, 64), "max_predicts": (1, 4096),
               "max_exports": (1, 64), "max_reports": (1, 64)}


class ServiceSettings(ConfigModel):
    """Everything a service replica needs; validated on construction, one line per refusal
    (a :class:`~nas.errors.ConfigError` naming the setting, the value and what is allowed;
    a refused token is never echoed)::

        max_archs must be an integer in [1, 100000], got 0

    Attributes:
        host: address to bind; a bearer token is required unless it is loopback.
        port: TCP port of the API.
        db: latency database URL or SQLite file (default: ``$NAS_DB_URL``, else the default
            file), read for devices' predictors; resolved to a URL on construction.
        token: bearer token required on every route but ``/health``; ``None`` only on
            loopback (:func:`resolve_token` reads ``$NAS_API_TOKEN``).
        state_dir: the service's own files: the search study database and the exports. Files
            are only ever served from ``state_dir/exports``.
        storage: Optuna storage URL or journal file of the searches (default: SQLite in
            ``state_dir``).
        allowed_roots: folders that search configs may name checkpoints and datasets in; a
            path from a request outside them is refused.
        max_archs: most architectures in one predict request.
        max_body_bytes: largest request body accepted (413 above).
        max_batch_size: most predict requests the replica merges into one ``predict`` call
            per predictor (:class:`~nas.serve._batch.Batcher`).
        batch_wait_timeout_s: how long a batch waits to fill (0: the requests that arrive
            before the replica's event loop turns).
        max_searches: most searches running at once (429 above).
        max_specialize: most ``POST /specialize`` computing at once (429 above).
        max_predicts: most ``POST /latency/predict`` computing at once (429 above).
        max_exports: most ``POST /exports`` computing at once (429 above).
        max_reports: most reports (``GET /searches/{id}/report``) rendered at once (429).
        ingress: one of :data:`INGRESS_MODES`.

    Paths are made absolute on construction, in the process that read them: the replica and
    the search actors run in other processes, whose working folder may differ.
    """

    what = "service settings"

    host: str = "127.0.0.1"
    port: int = 8000
    db: str | None = Field(default=None, validate_default=True)
    token: str | None = Field(default=None, repr=False)  # a secret: not in repr
    state_dir: str = Field(default="runs/serve", validate_default=True)
    storage: str | None = None
    allowed_roots: tuple[str, ...] = Field(default=(), validate_default=True)
    max_archs: int = 1000
    max_body_bytes: int = 1 << 20
    max_batch_size: int = 64
    batch_wait_timeout_s: float = Field(default=0.002, allow_inf_nan=True)  # NaN: ours
    max_searches: int = 2
    max_specialize: int = 1  # its search holds the GIL: two at once take twice as long
    max_predicts: int = 128
    max_exports: int = 1
    max_reports: int = 2
    ingress: str = "direct"

    def __init__(self, **data: Any) -> None:
        """Validate ``data``; a bad setting is one :class:`~nas.errors.ConfigError` line
        (built directly too, as ``nas serve`` does, not only through :meth:`from_dict`)."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["type"] == "value_error":  # one of the checks below: its line says it all
                raise ConfigError(str(err["msg"]).removeprefix("Value error, ")) from None
            raise ConfigError(format_validation_error(exc, self.what)) from None

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, v: Any) -> Any:
        if not isinstance(v, str) or not v:
            raise ValueError(f"host must be a non-empty string, got {v!r}")
        return v

    @field_validator(*_INT_BOUNDS, mode="before")
    @classmethod
    def _bounded(cls, v: Any, info: ValidationInfo) -> Any:
        low, high = _INT_BOUNDS[str(info.field_name)]
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ValueError(f"{info.field_name} must be an integer in [{low}, {high}], "
                             f"got {v!r}")
        return v

    @field_validator("batch_wait_timeout_s")
    @classmethod
    def _timeout(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError(f"batch_wait_timeout_s must be in [0, 1] seconds, got {v!r}")
        return v

    @field_validator("ingress", mode="before")
    @classmethod
    def _ingress(cls, v: Any) -> Any:
        if v not in INGRESS_MODES:
            raise ValueError(f"ingress must be one of {list(INGRESS_MODES)}, got {v!r}")
        return v

    @field_validator("db", "state_dir", "storage", mode="before")
    @classmethod
    def _path_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, os.PathLike) else v

    @field_validator("db")
    @classmethod
    def _db(cls, v: str | None) -> str:
        from nas.db import resolve_db_url

        return resolve_db_url(v)

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, v: str) -> str:
        return str(Path(v).expanduser().resolve())

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _allowed_roots(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return tuple(str(Path(r).expanduser().resolve()) if isinstance(r, str | Path) else r
                         for r in v)
        return v

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v:
            return str(Path(v).expanduser().resolve())
        return v

    @model_validator(mode="after")
    def _token(self) -> Self:
        # checked here, not as a field, so that a refused token is never echoed
        token = self.token
        if token is not None and (len(token) < _MIN_TOKEN_CHARS or not token.isprintable()
                                  or " " in token):
            raise ValueError(f"the API token must be at least {_MIN_TOKEN_CHARS} printable "
                             f"characters without spaces (${TOKEN_ENV})")
        if token is None and not is_loopback(self.host):
            raise ValueError(f"host {self.host!r} is not loopback: a bearer token is required "
                             f"(set ${TOKEN_ENV}, or let `nas serve` generate one)")
        return self

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).resolve()

    @property
    def exports_root(self) -> Path:
        return self.state_path / "exports"

    @property
    def search_storage(self) -> str:
        """The Optuna storage URL of the service's searches."""
        return self.storage or f"sqlite:///{self.state_path / 'searches.sqlite'}"

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(Path(r).resolve() for r in self.allowed_roots)

    def with_(self, **changes: Any) -> ServiceSettings:
        """A copy with ``changes``, validated as the original was."""
        return ServiceSettings(**{**self.model_dump(), **changes})


def check_files(settings: ServiceSettings) -> None:
    """Refuse, before anything starts, a service whose files cannot work: a ``state_dir``
    that is not a folder (or cannot be made), a latency database that cannot be read as one,
    a search storage that cannot be opened, an allowed root that is not an existing folder.

    Raises:
        ConfigError: one line naming the setting, its value and what is wrong.
    """
    state = settings.state_path
    if state.exists() and not state.is_dir():
        raise ConfigError(f"--state-dir {str(state)!r} is not a folder; give a folder (it is "
                          "made if missing)")
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--state-dir {str(state)!r} cannot be made: "
                          f"{exc.strerror or exc}") from None
    for root in settings.allowed_roots:
        if not Path(root).is_dir():
            raise ConfigError(f"--allow-root {root!r} is not an existing folder")
    _check_db(settings.db)
    _check_storage(settings.search_storage)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _check_db(url: str | None) -> None:
    from nas._io import mask_url
    from nas.db import LatencyDB

    try:
        db = LatencyDB(url)
        try:
            db.devices()
        finally:
            db.close()
    except NASError as exc:
        raise ConfigError(f"--db: {_first_line(exc)}") from None
    except Exception as exc:  # the driver's own error: a file that is not a database
        raise ConfigError(f"--db {mask_url(url or '')} cannot be read as a latency database "
                          f"({_first_line(exc)})") from None


def _check_storage(url: str) -> None:
    from nas._io import mask_url
    from nas.search import open_storage

    try:
        import optuna

        optuna.get_all_study_summaries(open_storage(url))
    except NASError as exc:
        raise ConfigError(f"--storage: {_first_line(exc)}") from None
    except Exception as exc:
        raise ConfigError(f"--storage {mask_url(url)} cannot be opened as an Optuna storage "
                          f"({_first_line(exc)})") from None

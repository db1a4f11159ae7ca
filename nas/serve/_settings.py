"""The service's settings: where it binds, which databases it reads, its limits and its token."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from nas._settings import env_with_prefix
from nas.errors import ConfigError

__all__ = ["INGRESS_MODES", "ServiceSettings", "is_loopback", "resolve_token"]

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


@dataclass(frozen=True)
class ServiceSettings:
    """Everything a service replica needs; validated on construction.

    Attributes:
        host: address to bind; a bearer token is required unless it is loopback.
        port: TCP port of the API.
        db: latency database URL or SQLite file (default: ``$NAS_DB_URL``, else the default
            file), read for devices' predictors; resolved to a URL on construction.
        token: bearer token required on every route but ``/health``; ``None`` only on
            loopback.
        state_dir: the service's own files: the search study database and the exports. Files
            are only ever served from ``state_dir/exports``.
        storage: Optuna storage URL or journal file of the searches (default: SQLite in
            ``state_dir``).
        allowed_roots: folders that search configs may name checkpoints and datasets in; a
            path from a request outside them is refused.
        max_archs: most architectures in one predict request.
        max_body_bytes: largest request body accepted (413 above).
        max_batch_size: most predict requests ``@serve.batch`` merges into one call.
        batch_wait_timeout_s: how long a batch waits to fill.
        max_searches: most searches running at once (429 above).
        ingress: one of :data:`INGRESS_MODES`.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    db: str | None = None
    token: str | None = None
    state_dir: str = "runs/serve"
    storage: str | None = None
    allowed_roots: tuple[str, ...] = field(default_factory=tuple)
    max_archs: int = 1000
    max_body_bytes: int = 1 << 20
    max_batch_size: int = 64
    batch_wait_timeout_s: float = 0.002
    max_searches: int = 2
    ingress: str = "direct"

    def __post_init__(self) -> None:
        # Paths are made absolute here, in the process that read them: the replica and the
        # search actors run in other processes, whose working folder may differ.
        from nas.db import resolve_db_url

        object.__setattr__(self, "db", resolve_db_url(self.db))
        object.__setattr__(self, "state_dir", str(Path(self.state_dir).expanduser().resolve()))
        object.__setattr__(self, "allowed_roots", tuple(
            str(Path(r).expanduser().resolve()) for r in self.allowed_roots))
        if self.storage is not None and "://" not in self.storage:
            object.__setattr__(self, "storage", str(Path(self.storage).expanduser().resolve()))
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host must be a non-empty string, got {self.host!r}")
        for name, value, low, high in (
            ("port", self.port, 1, 65535), ("max_archs", self.max_archs, 1, 100_000),
            ("max_body_bytes", self.max_body_bytes, 1024, 1 << 30),
            ("max_batch_size", self.max_batch_size, 1, 4096),
            ("max_searches", self.max_searches, 1, 1024),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if not 0 <= self.batch_wait_timeout_s <= 1:
            raise ConfigError(
                f"batch_wait_timeout_s must be in [0, 1] seconds, got "
                f"{self.batch_wait_timeout_s!r}"
            )
        if self.ingress not in INGRESS_MODES:
            raise ConfigError(
                f"ingress must be one of {list(INGRESS_MODES)}, got {self.ingress!r}"
            )
        if self.token is not None and (
            not isinstance(self.token, str) or len(self.token) < _MIN_TOKEN_CHARS
            or not self.token.isprintable() or " " in self.token
        ):
            raise ConfigError(
                f"the API token must be at least {_MIN_TOKEN_CHARS} printable characters "
                f"without spaces (${TOKEN_ENV})"
            )
        if self.token is None and not is_loopback(self.host):
            raise ConfigError(
                f"host {self.host!r} is not loopback: a bearer token is required (set "
                f"${TOKEN_ENV}, or let `nas serve` generate one)"
            )

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

    def with_(self, **changes: object) -> ServiceSettings:
        return replace(self, **changes)  # type: ignore[arg-type]

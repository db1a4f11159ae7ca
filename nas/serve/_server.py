"""Starting and stopping the service on a local Ray instance."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from nas._ray import start_ray, stop_ray
from nas._settings import ray_address
from nas.errors import ConfigError, NASError
from nas.serve._settings import ServiceSettings, check_files

__all__ = ["RunningService", "check_port_free", "ray_env", "start"]

APP_NAME = "nas"


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("localhost",) else "127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Refuse at once a port that something already listens on (before minutes of starting
    Ray and Serve end in a traceback).

    Raises:
        ConfigError: the port is taken, or ``host`` is not an address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # as the server will: a port left in TIME_WAIT by an earlier service is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use (another `nas serve`?); "
                                  "stop it or choose another --port") from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                              ) from None


def ray_env(settings: ServiceSettings) -> dict[str, str]:
    """Environment the Ray processes need for ``settings.ingress``; read when Ray starts.

    ``direct`` is Ray Serve's throughput-optimised mode with direct ingress: the ingress
    replica runs its own HTTP server, and the port range it draws from is pinned to
    ``settings.port``. Draining on shutdown is off (a single local replica has no load
    balancer to drain from), and so is the quarantine of released ports.
    """
    # Serve's own /-/routes and /-/healthz are answered before the app's token check, on
    # every port Serve opens: this callback closes them in each of its HTTP servers
    closed = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "nas.serve._guard.ray_middlewares",
              # on a busy machine (a training run on both cores) the HTTP proxy's start
              # outlasted Serve's 5 s readiness checks three times in a row and Serve killed
              # it ("HTTP proxies not available after 60s"): give each check 20 s, so the
              # proxy has all of serve.start's 60 s, and each later health check 30 s
              "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "20",
              "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30"}
    if settings.ingress == "proxy":
        return {**closed, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0",
                "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
    return {
        **closed,
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(settings.port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(settings.port + 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
        # a released port would otherwise be held back 150 s (for HAProxy, unused here): a
        # replica restarted after a crash could not listen again for that long
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
    }


@dataclass
class RunningService:
    """A started service; ``stop()`` shuts Serve (and the Ray instance it started) down."""

    url: str
    settings: ServiceSettings
    started_ray: bool
    env_before: dict[str, str | None]

    def redeploy(self, settings: ServiceSettings, timeout_s: float = 120.0) -> None:
        """Replace the service with one built from ``settings`` (e.g. a new token), on the
        same host, port and ingress; predictors are loaded again."""
        from ray import serve

        same = ("host", "port", "ingress")
        if any(getattr(settings, k) != getattr(self.settings, k) for k in same):
            raise ConfigError(f"redeploy keeps {', '.join(same)}; start a new service instead")
        serve.delete(APP_NAME)  # frees the port before the new replica listens on it
        # Serve's controller gives the port back a moment after the old replica stops; a
        # replica started before then fails with "no available ports" (seen on a busy
        # machine), so a failed deployment is tried again for a while
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                _deploy(settings)
                _wait_healthy(self.url, max(1.0, deadline - time.monotonic()))
                break
            except (RuntimeError, NASError):
                if time.monotonic() > deadline:
                    raise
                with contextlib.suppress(Exception):
                    serve.delete(APP_NAME)
                time.sleep(1.0)
        self.settings = settings

    def stop(self) -> None:
        from ray import serve

        with contextlib.suppress(Exception):
            serve.shutdown()
        if self.started_ray:
            stop_ray()  # Ray's processes too: none is left behind
            _restore(self.env_before)


def _restore(env: dict[str, str | None]) -> None:
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise NASError(f"the service did not answer on {url}/health within {timeout_s:.0f} s "
                   f"({last}); see the Ray logs under /tmp/ray/session_latest/logs/")


def _deploy(settings: ServiceSettings) -> None:
    from ray import serve

    from nas.serve._app import NASService

    settings.state_path.mkdir(parents=True, exist_ok=True)
    deployment: Any = NASService  # a serve Deployment once decorated
    app = deployment.options(ray_actor_options={"num_cpus": 0}).bind(settings)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)


def start(settings: ServiceSettings, *, num_cpus: int | None = None,
          timeout_s: float = 120.0) -> RunningService:
    """Start Ray (a local instance bound to loopback, through :func:`nas._ray.start_ray`,
    unless Ray already runs in this process), Serve and the service; return once it answers
    on ``http://host:port``.

    Args:
        settings: where to bind and what to serve.
        num_cpus: CPUs of the local Ray instance (default: all).
        timeout_s: how long to wait for the service to answer.

    Raises:
        ConfigError: the port is in use; a file setting cannot work
            (:func:`~nas.serve._settings.check_files`); ``$RAY_ADDRESS`` names a cluster
            (the service starts its own instance); or Ray already runs in this process without the
            environment ``settings.ingress`` needs (call ``ray.shutdown()`` first, or use
            ``ingress="proxy"``).
        NASError: the service did not come up.
    """
    check_port_free(settings.host, settings.port)
    check_files(settings)
    import ray

    env = ray_env(settings)
    env_before = {k: os.environ.get(k) for k in env}
    started_ray = False
    if ray.is_initialized():
        wrong = {k: v for k, v in env.items() if os.environ.get(k) != v}
        if wrong and settings.ingress == "direct":
            raise ConfigError(
                "Ray already runs in this process without the settings of Serve's direct "
                f"ingress ({', '.join(sorted(wrong))}); call ray.shutdown() first or use "
                "ingress='proxy'"
            )
    else:
        if ray_address() is not None:
            # Serve's ingress settings must reach the Ray processes as they start; a
            # cluster that runs already never sees them (the replica would listen elsewhere)
            raise ConfigError("nas serve starts its own Ray instance (bound to loopback); "
                              "unset RAY_ADDRESS to run it")
        # kept set while the service runs: a second start in this process checks them above
        os.environ.update(env)
        try:
            started_ray = start_ray(None, num_cpus=num_cpus, logging_level=logging.WARNING)
        except BaseException:
            _restore(env_before)
            raise
    from ray import serve

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    proxy_port = _free_port(settings.host) if settings.ingress == "direct" else settings.port
    try:
        serve.start(http_options={"host": settings.host, "port": proxy_port},
                    logging_config={"enable_access_log": False, "log_level": "WARNING"})
        _deploy(settings)
        host = settings.host if ":" not in settings.host else f"[{settings.host}]"
        if settings.host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if settings.host == "0.0.0.0" else "[::1]"
        url = f"http://{host}:{settings.port}"
        _wait_healthy(url, timeout_s)
    except BaseException:
        with contextlib.suppress(Exception):
            serve.shutdown()
        if started_ray:
            stop_ray()
            _restore(env_before)
        raise
    return RunningService(url=url, settings=settings, started_ray=started_ray,
                          env_before=env_before)

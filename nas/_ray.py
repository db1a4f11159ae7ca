"""Starting Ray for the package: a local instance bound to loopback, or a cluster joined as is.

Every command that needs Ray (``nas search``, Ray-placed latency timing, data-parallel
training, ``nas serve``) starts it through :func:`start_ray` and stops it with
:func:`stop_ray`, so that they share two guarantees:

- **Loopback only.** A local instance is started with node IP ``127.0.0.1``: Ray's GCS,
  raylet, core-worker and agent servers then listen on loopback (Ray binds its gRPC servers to
  ``0.0.0.0`` unless the node IP is loopback), the dashboard is off and metrics collection
  (an unauthenticated Prometheus endpoint) is off. Ray's autoscaler and dashboard processes
  still start a Prometheus server each, without a token, on fixed ports that the
  environment names: both are pointed at a port this process holds (bound, never listened
  on), so neither can listen. A cluster given by ``address`` or
  ``$RAY_ADDRESS`` is joined unchanged: its operator chose its interfaces.
- **Nothing outlives the driver.** A local start also starts a small watchdog process that
  follows the processes of that Ray instance (GCS, raylet, agents, workers) and kills them when
  the driver is gone, however it went (``SIGKILL`` included): Ray's own fate-sharing ends the
  GCS and raylet but left ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` behind.

- **The user's priority.** A local instance's workers run at the driver's niceness, not
  Ray's default of 15 (which lets any other busy process starve a search or the service).

Ray's own log lines never reach the driver's stdout (``log_to_driver`` off and Ray's error
messages routed to stderr), so ``--json`` output stays parseable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from nas._settings import ray_address
from nas.errors import ConfigError

__all__ = ["LOOPBACK", "start_ray", "stop_ray"]

#: the node IP of a Ray instance started here
LOOPBACK = "127.0.0.1"

#: the watchdog of the Ray instance this process started (None when it joined a cluster)
_watchdog: subprocess.Popen[bytes] | None = None
#: the port held while a local instance runs so that Ray's metrics servers cannot listen
_metrics_port: socket.socket | None = None


def start_ray(address: str | None = None, *, num_cpus: int | None = None,
              log_to_driver: bool = False, logging_level: int = logging.ERROR,
              env: dict[str, str] | None = None) -> bool:
    """Start a local Ray bound to loopback, or join the cluster at ``address``.

    Args:
        address: a cluster address (``host:port`` or ``ray://...``); default
            ``$RAY_ADDRESS``; neither: a new local instance (never a stale ``ray start``
            cluster's address).
        num_cpus: CPUs of a local instance (default: the machine's).
        log_to_driver: forward the workers' stdout/stderr to this process's stderr.
        logging_level: the level of Ray's own Python loggers here.
        env: environment variables the local instance's processes must see (set in this
            process for the start, and restored after it).

    Returns:
        True when this call started Ray (stop it with :func:`stop_ray`); False when Ray was
        already running in this process or a cluster was joined.

    Raises:
        ConfigError: the cluster at ``address`` cannot be reached.
    """
    import ray

    if ray.is_initialized():
        return False
    addr = ray_address(address)
    _quiet_error_messages()
    if addr:
        try:
            ray.init(address=addr, log_to_driver=log_to_driver, logging_level=logging_level)
        except ConnectionError as exc:
            raise ConfigError(f"cannot join the Ray cluster at {addr}: {_line(exc)}") from None
        return False
    _start_local(num_cpus=num_cpus, log_to_driver=log_to_driver, logging_level=logging_level,
                 env=env or {})
    return True


def stop_ray() -> None:
    """Shut Ray down in this process; a local instance's leftover processes are killed."""
    import ray

    global _watchdog, _metrics_port
    ray.shutdown()
    dog, _watchdog = _watchdog, None
    if dog is not None:
        _release(dog)
    held, _metrics_port = _metrics_port, None
    if held is not None:
        held.close()


# ---------------------------------------------------------------------------- local start
def _start_local(*, num_cpus: int | None, log_to_driver: bool, logging_level: int,
                 env: dict[str, str]) -> None:
    import ray
    from ray._private import ray_constants

    global _watchdog, _metrics_port
    if _watchdog is not None:  # an earlier instance shut down without stop_ray: reap it
        _release(_watchdog)
        _watchdog = None
    # Metrics collection opens an unauthenticated Prometheus endpoint; nothing here reads it.
    # The autoscaler's and the dashboard's own Prometheus servers listen on the ports these
    # variables name: a port held here (bound without SO_REUSEADDR) makes their bind fail.
    if _metrics_port is None:
        _metrics_port = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _metrics_port.bind((LOOPBACK, 0))
    held = str(_metrics_port.getsockname()[1])
    # Ray starts its workers at niceness 15, so that any other process on the machine takes
    # the CPU from them: beside two CPU-bound processes a service's search took 28 s instead
    # of 0.64 s (45x). A local instance is the user's own job: its workers run at the
    # driver's priority, as Ray's job supervisor starts a job's driver.
    wanted = {"RAY_enable_metrics_collection": "0", "AUTOSCALER_METRIC_PORT": held,
              "DASHBOARD_METRIC_PORT": held, "RAY_worker_niceness": "0", **env}
    before = {k: os.environ.get(k) for k in wanted}
    children_before = set(_children(_proc_table(), os.getpid()))
    # Ray turns a loopback node IP into the machine's address unless it believes clusters
    # are unsupported here; that belief is what keeps its servers on 127.0.0.1.
    cluster_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(wanted)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False,
                 num_cpus=num_cpus, log_to_driver=log_to_driver, logging_level=logging_level)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_flag
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    table = _proc_table()
    roots = [p for p in _children(table, os.getpid()) if p not in children_before]
    _watchdog = _watch(roots, table)


def _quiet_error_messages() -> None:
    """Send what Ray prints in the driver (a dead worker's "(raylet) ..." line among it) to
    stderr: stdout belongs to the command (``--json``)."""
    with contextlib.suppress(Exception):  # a private hook; absent in another Ray version
        from ray._private import worker as ray_worker

        original = ray_worker.print_to_stdstream
        if getattr(original, "_nas_stderr", False):
            return

        def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
            original({**data, "is_err": True}, ignore_prefix=ignore_prefix)

        to_stderr._nas_stderr = True  # type: ignore[attr-defined]
        ray_worker.print_to_stdstream = to_stderr


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# ---------------------------------------------------------------------------- watchdog
_WATCHDOG = r'''
import os, select, signal, sys, time

driver = int(sys.argv[1])
roots = {int(p): int(t) for p, t in (a.split(":") for a in sys.argv[2:])}

def table():
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                rest = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        out[int(name)] = (int(rest[1]), int(rest[19]))  # ppid, start time
    return out

def alive(pid, start, t):
    return pid in t and t[pid][1] == start

known = dict(roots)

def refresh():
    t = table()
    frontier = [p for p, s in known.items() if alive(p, s, t)]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in t.items():
            if ppid == parent and pid not in known:
                known[pid] = start
                frontier.append(pid)
    return t

def reap():
    for sig in (signal.SIGTERM, signal.SIGKILL):
        t = refresh()
        for pid, start in known.items():
            if alive(pid, start, t):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        deadline = time.time() + 3
        while time.time() < deadline:
            t = table()
            if not any(alive(p, s, t) for p, s in known.items()):
                return
            time.sleep(0.1)

driver_start = table().get(driver, (0, None))[1]
while True:
    ready, _, _ = select.select([0], [], [], 1.0)
    if ready:
        data = os.read(0, 64)
        if not data or b"stop" in data:
            break
    t = refresh()
    if not alive(driver, driver_start, t):
        break
reap()
'''


def _watch(roots: list[int], table: dict[int, tuple[int, int]]
           ) -> subprocess.Popen[bytes] | None:
    """Start the watchdog of the processes under ``roots``; None off Linux (no /proc)."""
    if not roots or not Path("/proc/self/stat").exists():
        return None
    args = [f"{p}:{table[p][1]}" for p in roots if p in table]
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), *args],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        close_fds=True, start_new_session=True,  # outlives a kill of the driver's group
    )


def _release(dog: subprocess.Popen[bytes]) -> None:
    """Tell the watchdog that Ray was shut down: it kills what is left, then exits."""
    with contextlib.suppress(OSError, ValueError):
        if dog.stdin is not None:
            dog.stdin.write(b"stop\n")
            dog.stdin.close()
    try:
        dog.wait(10)
    except subprocess.TimeoutExpired:
        dog.kill()
        dog.wait(5)


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every process (empty off Linux)."""
    out: dict[int, tuple[int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                rest = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        out[int(name)] = (int(rest[1]), int(rest[19]))
    return out


def _children(table: dict[int, tuple[int, int]], parent: int) -> list[int]:
    return [pid for pid, (ppid, _) in table.items() if ppid == parent]

"""A real two-node Ray cluster on this machine, for the module that uses it.

The head (``ray start --head``, 2 CPUs) and a second node (``ray start --address``, 1 CPU and
the custom resource ``device:pi4``) each run ``--block`` as a child of the test process, so
that a test can kill the second node's whole process tree and the teardown kills exactly this
cluster (never another Ray on the machine, as ``ray stop`` would).

Ray 2.60 turns token authentication on: the fixture makes a token and gives it to both nodes
and to every driver through ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (no
``~/.ray/auth_token`` is read or written).

A multi-node cluster cannot be loopback-only: Ray turns a loopback address given to
``ray start`` or ``ray.init`` into the machine's own address whenever clusters are enabled
(which a second node needs), so this cluster listens on that address, behind its token.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(root: int) -> list[int]:
    """Pids of the live processes under ``root`` (Ray's workers start their own process
    groups, so a group would miss them), ``root`` included."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            rest = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if rest[0] != b"Z":
            parents[int(name)] = int(rest[1])
    out = [root] if root in parents else []
    frontier = list(out)
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        out += kids
        frontier += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Cluster:
    """What a test needs of the running cluster."""

    address: str
    env: dict[str, str]
    temp_dir: Path
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def node_id(self, index: int) -> str:
        """The Ray node id of node ``index`` (0: the head), from its raylet's command line."""
        for pid in _tree(self.nodes[index].pid):
            args = _cmdline(pid).split()
            if args and args[0].endswith("/raylet/raylet"):
                for arg in args:
                    if arg.startswith("--node_id="):
                        return arg.split("=", 1)[1]
        raise AssertionError(f"node {index} has no raylet")

    def pids(self, index: int) -> list[int]:
        """Live processes of node ``index`` (its raylet, agents and workers)."""
        return _tree(self.nodes[index].pid)

    def kill_node(self, index: int) -> None:
        """SIGKILL every process of node ``index``, as a machine losing power would."""
        _kill(_tree(self.nodes[index].pid))
        self.nodes[index].wait(30)

    def run(self, args: list[str], timeout: float = 300, **kw: object
            ) -> subprocess.CompletedProcess[str]:
        """Run ``nas ARGS`` as a driver of this cluster."""
        return subprocess.run([sys.executable, "-m", "nas.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]

    def popen(self, args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "nas.cli", *args], env=self.env,
                                start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)


def _wait_nodes(env: dict[str, str], address: str, n: int, timeout: float = 90) -> None:
    code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        res = subprocess.run([sys.executable, "-c", code, address], env=env,
                             capture_output=True, text=True, timeout=120)
        last = res.stdout.strip() + res.stderr[-500:]
        if res.returncode == 0 and res.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster did not come up with {n} nodes: {last}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    pytest.importorskip("ray")
    # Unix socket paths are short: a short temporary folder of its own
    temp_dir = Path(tempfile.mkdtemp(prefix="nasray", dir="/tmp"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "NAS_DEVICES_DIR", "NAS_DB_URL")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               RAY_enable_metrics_collection="0", PYTHONUNBUFFERED="1",
               NAS_CACHE_DIR=str(tmp_path_factory.mktemp("cluster-cache")),
               NAS_DEVICES_DIR=str(tmp_path_factory.mktemp("cluster-devices")))
    address = f"127.0.0.1:{port}"
    c = Cluster(address=address, env={**env, "RAY_ADDRESS": address}, temp_dir=temp_dir)
    common = ["--block", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    try:
        c.nodes.append(subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", *common],
            env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_nodes(env, address, 1)
        c.nodes.append(subprocess.Popen(
            [str(BIN / "ray"), "start", f"--address={address}", "--num-cpus=1",
             '--resources={"device:pi4": 1}', *common],
            env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_nodes(env, address, 2)
        yield c
    finally:
        for node in c.nodes[::-1]:  # SIGKILL: Ray's own shutdown takes seconds, for nothing
            _kill(_tree(node.pid))
            node.wait(30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

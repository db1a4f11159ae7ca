"""What a `nas search` leaves on the machine: its Ray listens on loopback only and runs at the
user's priority, a dead worker's message never reaches stdout, and a SIGKILLed driver leaves
no Ray process behind."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]


# ---------------------------------------------------------------------------- /proc
def _table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time, command line) of every process."""
    out: dict[int, tuple[int, int, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            rest = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        out[int(name)] = (int(rest[1]), int(rest[19]), cmd.strip())
    return out


def _descendants(root: int) -> dict[int, tuple[int, str]]:
    """The processes under ``root``: pid -> (start time, command line)."""
    table = _table()
    out: dict[int, tuple[int, str]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start, cmd) in table.items():
            if ppid == parent and pid not in out:
                out[pid] = (start, cmd)
                frontier.append(pid)
    return out


def _alive(procs: dict[int, tuple[int, str]]) -> dict[int, str]:
    table = _table()
    return {p: cmd for p, (start, cmd) in procs.items()
            if p in table and table[p][1] == start}


def _niceness(pid: int) -> int:
    """The niceness of process ``pid`` (the 19th field of its /proc stat)."""
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[16])


def _listening(pids: list[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every TCP socket the processes listen on."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            out.append((inodes[cols[9]], _address(cols[1].split(":")[0], v6)))
    return out


def _address(hexaddr: str, v6: bool) -> str:
    raw = bytes.fromhex(hexaddr)
    if not v6:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    return str(ipaddress.IPv6Address(b"".join(words)))


def _loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


# ---------------------------------------------------------------------------- runs
def _start(cfg: dict[str, Any], tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    path = tmp_path / f"{cfg['study']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NAS_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "search", "--config", str(path), "--no-progress",
         *extra],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _completed(cfg: dict[str, Any]) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(cfg["storage"]))
    try:
        st = optuna.load_study(study_name=cfg["study"], storage=storage)
    except KeyError:
        return []
    return [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]


def _wait_for(cond: Any, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_search_ray_listens_on_loopback_and_json_survives_a_dead_worker(
        make_config, tmp_path) -> None:
    """While a search runs, no process of its Ray listens beyond loopback, and its workers run
    at the driver's priority (Ray's default niceness of 15 let any busy process starve them);
    a worker killed mid-search makes Ray print a "(raylet)" line, which must not land in the
    JSON on stdout."""
    cfg = make_config(n_trials=24, batch_size=1, study="hygiene")
    proc = _start(cfg, tmp_path, "--json")
    try:
        _wait_for(lambda: len(_completed(cfg)) >= 3, proc)
        procs = _descendants(proc.pid)
        exposed = [(pid, addr, procs[pid][1][:60]) for pid, addr in _listening(list(procs))
                   if not _loopback(addr)]
        assert not exposed, f"Ray listens beyond loopback: {exposed}"
        worker = _completed(cfg)[-1].user_attrs["worker_pid"]
        assert worker in procs, (worker, procs)
        assert _niceness(worker) == _niceness(proc.pid) == os.getpriority(os.PRIO_PROCESS, 0)
        os.kill(_completed(cfg)[-1].user_attrs["worker_pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out)  # stdout is the JSON and nothing else
    assert summary["n_trials"] == 24


def test_a_sigkilled_driver_leaves_no_ray_process(make_config, tmp_path) -> None:
    """`kill -9` of the `nas search` process alone: within seconds no process of the Ray it
    started is left (its dashboard and runtime-env agents included)."""
    cfg = make_config(n_trials=200, batch_size=1, study="orphans")
    proc = _start(cfg, tmp_path)
    procs: dict[int, tuple[int, str]] = {}
    try:
        _wait_for(lambda: len(_completed(cfg)) >= 2, proc)
        procs = _descendants(proc.pid)
        assert any("raylet" in cmd for _, cmd in procs.values()), procs
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, not its process group
        proc.wait(30)
        deadline = time.time() + 20
        while _alive(procs) and time.time() < deadline:
            time.sleep(0.5)
        left = _alive(procs)
        assert not left, f"left behind: {sorted(cmd[:40] for cmd in left.values())}"
    finally:
        for pid in _alive(procs):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

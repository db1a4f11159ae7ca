"""A real ``nas serve`` process, as a user starts it: its default size limits hold, a second
one on the same port is refused at once in one line, and no port that Ray Serve opens for it
answers without the token (issue 17, findings 8, 10, 12)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from nas.space import get_space

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (Ray's processes start their own sessions, so
    the tree, not the process group): read from /proc."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in out]
        out.update(kids)
        frontier.extend(kids)
    return out


def _listening(pid: int) -> dict[int, str]:
    """TCP ports listened on by ``pid`` and its descendants (Ray's processes), each with the
    name of its process (``ray::ProxyActor``...): read from /proc."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A":  # LISTEN
                    inodes[cols[9]] = int(cols[1].rsplit(":", 1)[1], 16)
    out: dict[int, str] = {}
    for p in _descendants(pid):
        entry = Path("/proc") / str(p)
        try:
            name = (entry / "comm").read_text().strip()
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    out[inodes[target[8:-1]]] = name
        except OSError:  # a process that ended meanwhile
            continue
    return out


def test_default_size_limits_hold(nas_serve: Any) -> None:
    """``nas serve`` without limit flags: bodies up to 1 MiB and 1000 architectures a
    request; one byte or one architecture more is refused, naming the limit."""
    url, auth = nas_serve.url, nas_serve.auth
    archs = [a.to_dict() for a in get_space("tiny").sample_many(1001, seed=0, unique=False)]
    body = {"device": "cpu-1t", "space": "tiny", "archs": archs[:1000]}
    r = requests.post(f"{url}/latency/predict", json=body, headers=auth, timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["latency_ms"]) == 1000
    r = requests.post(f"{url}/latency/predict", json={**body, "archs": archs}, headers=auth,
                      timeout=120)
    assert r.status_code == 422
    assert "at most 1000 architectures" in r.text
    # 1 MiB exactly is read (and then refused as JSON); one byte more is a 413
    text = json.dumps(body).encode()
    exact = text + b" " * ((1 << 20) - len(text))
    r = requests.post(f"{url}/latency/predict", data=exact, headers={
        **auth, "content-type": "application/json"}, timeout=120)
    assert r.status_code == 200, r.text[:300]
    r = requests.post(f"{url}/latency/predict", data=exact + b" ", headers={
        **auth, "content-type": "application/json"}, timeout=120)
    assert r.status_code == 413
    assert "limit of 1048576 bytes" in r.text

    def chunked() -> Any:  # no Content-Length: the limit holds all the same
        yield text
        for _ in range(1025):
            yield b" " * 1024

    r = requests.post(f"{url}/latency/predict", data=chunked(), headers={
        **auth, "content-type": "application/json"}, timeout=120)
    assert r.status_code == 413


def test_a_second_nas_serve_on_a_busy_port_is_refused_at_once(
        nas_serve: Any, nas_command: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [*nas_command, "serve", "--port", str(nas_serve.port), "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,  # a hang guard, not a claim on speed
        env={**os.environ, "NAS_API_TOKEN": nas_serve.token})
    assert done.returncode == 2, done.stderr[-2000:]
    # "at once": the error is all it printed, so it was refused before it printed "starting
    # Ray and Ray Serve...", that is before Ray was started
    assert done.stderr.strip().splitlines() == [
        f"error: port {nas_serve.port} on 127.0.0.1 is in use (another `nas serve`?); stop "
        "it or choose another --port"]
    assert requests.get(f"{nas_serve.url}/health", timeout=10).status_code == 200


def test_no_port_of_ray_serve_answers_without_the_token(nas_serve: Any) -> None:
    """Every TCP port that Ray Serve's processes listen on for this service (the API's, the
    HTTP proxy's, and the internal gRPC ones) is asked for Serve's own routes and the API's
    without the token: nothing but ``/health`` answers 2xx."""
    ports = {p: n for p, n in _listening(nas_serve.proc.pid).items()
             if n.startswith(("ray::Serve", "ray::ProxyActor"))}
    assert nas_serve.port in ports, ports
    http_ports = []
    for port, name in sorted(ports.items()):
        base = f"http://127.0.0.1:{port}"
        for path in ("/-/routes", "/-/healthz", "/devices", "/openapi.json", "/docs",
                     "/searches", "/"):
            try:
                r = requests.get(f"{base}{path}", timeout=5)
            except requests.RequestException:
                continue  # not HTTP/1.1 (Serve's internal gRPC)
            http_ports.append(port)
            assert not 200 <= r.status_code < 300, (name, port, path, r.status_code, r.text)
        try:
            r = requests.get(f"{base}/health", timeout=5)
        except requests.RequestException:
            continue
        assert r.status_code == 200, (name, port)
    # the API's port and the HTTP proxy's (Serve's second port) were both asked
    assert len(set(http_ports)) >= 2, ports
    r = requests.get(f"{nas_serve.url}/devices", headers=nas_serve.auth, timeout=30)
    assert r.status_code == 200

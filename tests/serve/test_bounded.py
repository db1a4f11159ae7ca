"""A bounded service (issue 24): every route that computes has a concurrency limit answered
429 with ``Retry-After`` and a size limit; work stops when its client goes away or its search
is cancelled; caps on effort are in the schema; the searches' counts come from one source;
nothing of the service listens beyond its host, and Ray's metrics do not answer; bad files
are refused before Ray starts."""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from nas.search import load_results, specialize

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: a heavy /specialize: population x generations at the route's cap (seconds of CPU here)
HEAVY: dict[str, Any] = {"space": "ofa_mbv3", "proxy": "ofa-imagenet",
                         "objectives": ["accuracy", "latency:note10"],
                         "population": 1000, "generations": 200}
LIGHT: dict[str, Any] = {**HEAVY, "population": 10, "generations": 2}


def _wait(url: str, search_id: str, until: set[str], timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = requests.get(f"{url}/searches/{search_id}", timeout=30).json()
        if body["status"] in until:
            return body
        assert time.monotonic() < deadline, f"search {search_id} still {body['status']}"
        time.sleep(0.2)


# ---------------------------------------------------------------------- concurrency
def test_a_burst_of_heavy_specialize_gets_results_or_429_and_health_answers_throughout(
        service: Any) -> None:
    """Eight heavy /specialize at once against a service that runs one at a time (its
    default): each is answered with a result or a 429 carrying Retry-After, and /health
    answers all along."""
    stop = threading.Event()
    health: list[int] = []

    def poll_health() -> None:
        while not stop.is_set():
            health.append(requests.get(f"{service.url}/health", timeout=60).status_code)
            time.sleep(0.1)

    def heavy(seed: int) -> requests.Response:
        return requests.post(f"{service.url}/specialize", json={**HEAVY, "seed": seed},
                             timeout=300)

    watcher = threading.Thread(target=poll_health)
    watcher.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(heavy, range(8)))
    finally:
        stop.set()
        watcher.join()
    codes = sorted(r.status_code for r in answers)
    assert set(codes) <= {200, 429}, [r.text[:200] for r in answers]
    assert 200 in codes
    assert 429 in codes  # 8 at once, 1 slot, each seconds long
    for r in answers:
        if r.status_code == 429:
            assert r.headers["Retry-After"] == "1"
            assert "the most this service runs at once" in r.json()["detail"][0]["msg"]
    assert health
    assert set(health) == {200}
    # the slots are free again: a light request is answered
    assert requests.post(f"{service.url}/specialize", json=LIGHT, timeout=120).status_code == 200


def test_abandoned_specialize_requests_give_their_slots_back(service: Any) -> None:
    """Two heavy /specialize whose clients hang up: their work stops and frees its slot (a
    request afterwards is answered, not refused for ever)."""
    def hang_up(seed: int) -> None:
        try:
            requests.post(f"{service.url}/specialize", json={**HEAVY, "seed": 100 + seed},
                          timeout=(10, 0.5))
        except requests.exceptions.ReadTimeout:
            pass

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(hang_up, range(2)))
    deadline = time.monotonic() + 120
    while True:
        r = requests.post(f"{service.url}/specialize", json=LIGHT, timeout=120)
        if r.status_code == 200:
            break
        assert r.status_code == 429, r.text
        assert time.monotonic() < deadline, "an abandoned request kept its slot"
        time.sleep(0.5)


def test_specialize_stops_when_asked() -> None:
    """The hook the service sets when a client goes away: the search ends at its next
    generation and says so (it does not run to its end)."""
    from nas.search._fast import SearchStopped

    stop = threading.Event()
    stop.set()
    with pytest.raises(SearchStopped, match="stopped before it finished"):
        specialize("ofa_mbv3", objectives=["accuracy", "latency:note10"], population=1000,
                   generations=2000, stop=stop)


# ---------------------------------------------------------------------- sizes and caps
def test_budgets_and_search_effort_are_capped_naming_the_field(service: Any) -> None:
    r = requests.post(f"{service.url}/specialize", json={
        **LIGHT, "budgets": {"latency:note10": [float(v) for v in range(1, 66)]}}, timeout=60)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][:2] == ["body", "budgets"]
    assert "at most 64" in detail["msg"]
    r = requests.post(f"{service.url}/specialize", json={
        **LIGHT, "objectives": ["accuracy", "latency:note10", "macs"],
        "budgets": {"latency:note10": [float(v) for v in range(1, 41)],
                    "macs": [float(v) * 1e6 for v in range(1, 41)]}}, timeout=60)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "budgets"]
    assert "80 bounds in all" in detail["msg"]
    assert "64" in detail["msg"]
    base = {"space": "ofa_mbv3", "proxy": "ofa-imagenet",
            "objectives": ["accuracy", "latency:note10"], "engine": "predictor"}
    for key, value, cap in (("n_trials", 1_000_000, 10_000), ("population", 5000, 1000),
                            ("generations", 50_000, 2000)):
        r = requests.post(f"{service.url}/searches", json={**base, key: value}, timeout=60)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["body", key]
        assert detail["msg"] == f"{key} = {value} is above this service's limit of {cap}"
    schema = requests.get(f"{service.url}/openapi.json", timeout=30).json()
    models = schema["components"]["schemas"]
    for model in models.values():
        props = model.get("properties", {})
        if "n_trials" in props:
            assert props["n_trials"]["maximum"] == 10_000
    req = models["SpecializeRequest"]["properties"]
    assert req["generations"]["maximum"] == 2000
    assert req["population"]["anyOf"][0]["maximum"] == 1000
    assert req["budgets"]["additionalProperties"]["maxItems"] == 64


# ---------------------------------------------------------------------- searches
def test_a_cancelled_predictor_search_stops_and_counts_agree(service: Any) -> None:
    """DELETE on a predictor-engine search stops it (it does not run to its end: nothing is
    stored); the list of searches and each search's status give the same counts."""
    body = {"space": "ofa_mbv3", "proxy": "ofa-imagenet", "engine": "predictor",
            "objectives": ["accuracy", "latency:note10"], "population": 1000,
            "generations": 2000, "n_trials": 100, "study": "bounded-cancel"}
    r = requests.post(f"{service.url}/searches", json=body, timeout=60)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    _wait(service.url, sid, {"running"})
    r = requests.delete(f"{service.url}/searches/{sid}", timeout=30)
    assert r.status_code == 202
    done = _wait(service.url, sid, {"cancelled", "completed", "failed"})
    assert done["status"] == "cancelled"
    assert done["trials_done"] == 0
    assert not load_results("bounded-cancel", service.settings.search_storage).trials

    small = {**body, "population": 20, "generations": 10, "n_trials": 30,
             "study": "bounded-counts"}
    r = requests.post(f"{service.url}/searches", json=small, timeout=60)
    assert r.status_code == 201, r.text
    other = r.json()["id"]
    finished = _wait(service.url, other, {"completed", "failed"})
    assert finished["status"] == "completed", finished["error"]
    assert finished["trials_done"] > 0
    listed = {s["id"]: s for s in requests.get(f"{service.url}/searches", timeout=30).json()}
    for search_id in (sid, other):
        one = requests.get(f"{service.url}/searches/{search_id}", timeout=30).json()
        assert listed[search_id]["trials_done"] == one["trials_done"]
        assert listed[search_id]["trials_failed"] == one["trials_failed"]


# ---------------------------------------------------------------------- sockets
def _tree(pid: int) -> set[int]:
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    out, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in out]
        out.update(kids)
        frontier.extend(kids)
    return out


def _listening_addresses(pid: int) -> list[tuple[str, int, str]]:
    """(address, port, process name) of each TCP socket that ``pid``'s process tree listens
    on, read from /proc (IPv4-mapped IPv6 addresses as IPv4)."""
    sockets: dict[str, tuple[str, int]] = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] != "0A":  # LISTEN
                    continue
                hexaddr, hexport = cols[1].split(":")
                raw = bytes.fromhex(hexaddr)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                if v6 and words[:12] == b"\0" * 10 + b"\xff\xff":
                    words = words[12:]
                addr = (".".join(str(b) for b in words) if len(words) == 4
                        else ":".join(words[i:i + 2].hex() for i in range(0, 16, 2)))
                sockets[cols[9]] = (addr, int(hexport, 16))
    out = []
    for p in _tree(pid):
        entry = Path("/proc") / str(p)
        try:
            name = (entry / "comm").read_text().strip()
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in sockets:
                    out.append((*sockets[target[8:-1]], name))
        except OSError:
            continue
    return out


def test_nothing_of_the_service_listens_beyond_its_host_nor_serves_metrics(
        nas_serve: Any) -> None:
    """``nas serve`` on 127.0.0.1: every socket its processes listen on (Ray's, Serve's
    proxy, the replica's HTTP and gRPC servers) is on loopback, and none answers Ray's
    Prometheus metrics."""
    requests.get(f"{nas_serve.url}/devices", headers=nas_serve.auth, timeout=60)
    found = _listening_addresses(nas_serve.proc.pid)
    assert any(port == nas_serve.port for _, port, _ in found), found
    assert any(name.startswith("ray::ServeRepli") for _, _, name in found), found
    exposed = [s for s in found if not s[0].startswith("127.")
               and s[0] != "0000:0000:0000:0000:0000:0000:0000:0001"]
    assert not exposed, exposed
    for _, port, name in found:
        try:
            r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        except requests.RequestException:
            continue  # not HTTP/1.1 (gRPC)
        assert "# HELP" not in r.text, (name, port)


# ---------------------------------------------------------------------- start-up
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("flags", "words"), [
    (["--state-dir", "FILE"], "is not a folder"),
    (["--db", "CORRUPT"], "--db: "),
    (["--storage", "bogus://nowhere"], "--storage: "),
    (["--allow-root", "MISSING"], "is not an existing folder"),
])
def test_nas_serve_refuses_unusable_files_before_ray_starts(
        tmp_path: Path, run_nas: Any, flags: list[str], words: str) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "corrupt.sqlite").write_bytes(b"not a database " * 100)
    subs = {"FILE": str(tmp_path / "file"), "CORRUPT": str(tmp_path / "corrupt.sqlite"),
            "MISSING": str(tmp_path / "missing")}
    settings = {"--port": str(free_port()), "--state-dir": str(tmp_path / "state"),
                "--db": str(tmp_path / "ok.sqlite")}
    settings[flags[0]] = subs.get(flags[1], flags[1])
    code, out, err = run_nas(["serve", *(x for kv in settings.items() for x in kv)])
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert words in lines[0]
    assert "starting Ray" not in out + err

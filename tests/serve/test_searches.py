"""Searches, exports and reports over HTTP: a search submitted to the service runs on its Ray
cluster, completes, and its exported subnet downloads and verifies; bad configs are refused
before anything runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from nas.export import verify_export
from nas.latency import load_predictor
from nas.search import load_results
from nas.space import get_space

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _config(env: dict[str, Any], **kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "space": "tiny", "checkpoint": env["checkpoint"], "data": "digits",
        "proxy": "inherited", "proxy_options": {"val_limit": 100, "bn_batches": 1,
                                                "bn_batch_size": 32},
        "objectives": ["accuracy", "latency:cpu-1t"], "n_trials": 10, "workers": 1,
        "batch_size": 5, "seed": 0,
    }
    cfg.update(kw)
    return cfg


def _wait(url: str, search_id: str, until: set[str], timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = requests.get(f"{url}/searches/{search_id}", timeout=30).json()
        if body["status"] in until:
            return body
        time.sleep(0.5)
    raise AssertionError(f"search {search_id} still {body['status']} after {timeout_s} s")


def test_search_completes_and_its_export_downloads_and_verifies(
        service: Any, service_env: dict[str, Any], tmp_path: Path, run_nas: Any) -> None:
    r = requests.post(f"{service.url}/searches", json=_config(service_env, study="http-e2e"),
                      timeout=60)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["study"] == "http-e2e"
    assert created["url"] == f"/searches/{created['id']}"
    body = _wait(service.url, created["id"], {"completed", "failed"})
    assert body["status"] == "completed", body["error"]
    assert body["trials_done"] + body["trials_failed"] == 10
    assert body["trials_done"] > 0
    front = body["front"]
    assert front
    assert all(t["feasible"] for t in front)
    # the front is non-dominated in (accuracy up, latency down), and its latencies are the
    # service's predictor's
    pts = [(t["values"]["accuracy"], t["values"]["latency:cpu-1t"]) for t in front]
    assert not any(b != a and b[0] >= a[0] and b[1] <= a[1] for a in pts for b in pts)
    sp = get_space("tiny")
    pred = load_predictor("cpu-1t", "tiny", db=service_env["db"])
    assert [t["latency_ms"]["cpu-1t"] for t in front] == pytest.approx(
        list(pred.predict([sp.parse(t["arch"]) for t in front])))
    # the same study, read from the service's storage with the Python API
    res = load_results("http-e2e", service.settings.search_storage)
    assert [t.number for t in res.front] == [t["number"] for t in front]

    r = requests.post(f"{service.url}/searches", json=_config(service_env, study="http-e2e"),
                      timeout=60)
    assert r.status_code == 409
    assert "exists already" in r.text

    listed = requests.get(f"{service.url}/searches", timeout=10).json()
    assert {"id": created["id"], "study": "http-e2e"}.items() <= next(
        s for s in listed if s["id"] == created["id"]).items()

    report = requests.get(f"{service.url}/searches/{created['id']}/report", timeout=60)
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert "http-e2e" in report.text
    assert 'id="front-0"' in report.text
    assert "<script src=" not in report.text  # self-contained

    out = tmp_path / "report.html"
    code, _, err = run_nas(["report", "--study", "http-e2e", "--storage",
                           service.settings.search_storage, "--out", str(out)])
    assert code == 0, err
    page = out.read_text()
    for t in front:
        assert f"<code>{t['arch_hash']}</code>" in page

    best = front[0]
    r = requests.post(f"{service.url}/exports", json={"study": "http-e2e",
                                                      "trial": best["number"]}, timeout=120)
    assert r.status_code == 201, r.text
    export = r.json()
    assert set(export["files"]) == {"model.onnx", "weights.safetensors", "manifest.json"}
    assert export["manifest"]["arch_hash"] == best["arch_hash"]
    folder = tmp_path / "download"
    folder.mkdir()
    for name in export["files"]:
        f = requests.get(f"{service.url}/exports/{export['id']}/{name}", timeout=60)
        assert f.status_code == 200
        (folder / name).write_bytes(f.content)
    checked = verify_export(folder)
    assert checked["arch_hash"] == best["arch_hash"]
    # asking again gives the same export, not a second one
    again = requests.post(f"{service.url}/exports", json={"study": "http-e2e",
                                                          "trial": best["number"]}, timeout=60)
    assert again.status_code == 201
    assert again.json()["id"] == export["id"]
    r = requests.get(f"{service.url}/exports/{export['id']}/secrets.txt", timeout=10)
    assert r.status_code == 404
    assert "model.onnx" in r.text
    # a trial that is not in the study
    r = requests.post(f"{service.url}/exports", json={"study": "http-e2e", "trial": 999},
                      timeout=60)
    assert r.status_code == 404
    assert "trial 999" in r.text


def test_cancel_stops_a_search_and_keeps_what_it_stored(service: Any,
                                                        service_env: dict[str, Any]) -> None:
    cfg = _config(service_env, study="http-cancel", n_trials=5000, batch_size=2,
                  objectives=["latency:cpu-1t", "params"], proxy_options={}, engine="ray")
    r = requests.post(f"{service.url}/searches", json=cfg, timeout=60)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    deadline = time.monotonic() + 120
    while requests.get(f"{service.url}/searches/{sid}", timeout=30).json()["trials_done"] < 4:
        assert time.monotonic() < deadline, "no trial completed"
        time.sleep(0.3)
    r = requests.delete(f"{service.url}/searches/{sid}", timeout=30)
    assert r.status_code == 202
    assert r.json()["status"] in ("cancelling", "cancelled")
    body = _wait(service.url, sid, {"cancelled", "completed", "failed"}, timeout_s=60)
    assert body["status"] == "cancelled"
    assert 4 <= body["trials_done"] < 5000
    assert body["front"]
    time.sleep(1.0)  # nothing runs after the cancel returned
    later = requests.get(f"{service.url}/searches/{sid}", timeout=30).json()
    assert later["trials_done"] == body["trials_done"]


@pytest.mark.parametrize(("change", "loc", "status", "needle"), [
    ({"storage": "/tmp/evil.journal"}, ["body", "storage"], 422, "set by the service"),
    ({"db": "sqlite:////etc/x.sqlite"}, ["body", "db"], 422, "set by the service"),
    ({"address": "ray://10.0.0.1:10001"}, ["body", "address"], 422, "set by the service"),
    ({"checkpoint": "OUTSIDE"}, ["body", "checkpoint"], 422, "outside the folders"),
    ({"checkpoint": "/etc/passwd"}, ["body", "checkpoint"], 422, "outside the folders"),
    ({"proxy": "predictor:path=/etc/passwd"}, ["body", "proxy"], 422, "outside the folders"),
    ({"checkpoint": "ALLOWED/" + "../" * 20 + "etc/passwd"}, ["body", "checkpoint"], 422,
     "outside"),
    ({"data": "/nonexistent/cifar"}, ["body", "data"], 422, "outside"),
    ({"data": "ALLOWED/cifar"}, ["body", "data"], 422, "does not exist"),
    ({"proxy_options": {"cache": False}}, ["body", "proxy_options", "cache"], 422,
     "unknown proxy option"),
    ({"proxy_options": {"cache": "/tmp/x"}}, ["body", "proxy_options", "cache"], 422,
     "valid boolean"),
    ({"sampler": "magic"}, ["body", "sampler"], 422, "tpe"),
    ({"n_trials": 0}, ["body", "n_trials"], 422, "greater than or equal to 1"),
    ({"shell": "rm -rf /"}, ["body", "shell"], 422, "extra"),
    ({"workers": 64}, ["body", "workers"], 422, "CPUs"),
])
def test_bad_search_configs_are_refused_naming_the_field(
        service: Any, service_env: dict[str, Any], change: dict[str, Any], loc: list[Any],
        status: int, needle: str) -> None:
    cfg = _config(service_env, study="refused")
    for key, value in change.items():
        if isinstance(value, str):
            value = value.replace("OUTSIDE", service_env["outside"]).replace(
                "ALLOWED", str(service_env["allowed"]))
        cfg[key] = value
    r = requests.post(f"{service.url}/searches", json=cfg, timeout=60)
    assert r.status_code == status, r.text
    hit = [e for e in r.json()["detail"] if e["loc"] == loc]
    assert hit, r.json()
    assert needle.lower() in hit[0]["msg"].lower()

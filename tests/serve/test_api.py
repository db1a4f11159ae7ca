"""The HTTP API on real Ray Serve: every route with good and bad input, batching under
concurrency against the Python API, and the limits and checks on what requests may name."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

from nas.latency import load_predictor
from nas.space import get_family_space, get_space

pytestmark = pytest.mark.ray


def _archs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return [a.to_dict() for a in get_space("tiny").sample_many(n, seed=seed)]


def _predict(url: str, archs: list[dict[str, Any]], **extra: Any) -> requests.Response:
    body = {"device": "cpu-1t", "space": "tiny", "archs": archs, **extra}
    return requests.post(f"{url}/latency/predict", json=body, timeout=30)


def _raw_get(url: str, path: str) -> tuple[int, str]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..``)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read().decode(errors="replace")


def test_health_docs_and_schema(service: Any) -> None:
    r = requests.get(f"{service.url}/health", timeout=10)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    docs = requests.get(f"{service.url}/docs", timeout=10)
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    paths = requests.get(f"{service.url}/openapi.json", timeout=10).json()["paths"]
    for p in ("/health", "/devices", "/spaces", "/latency/predict", "/searches",
              "/searches/{search_id}", "/searches/{search_id}/report", "/exports",
              "/exports/{export_id}/{file}"):
        assert p in paths, p
    assert "delete" in paths["/searches/{search_id}"]


def test_devices_list_profiles_and_fitted_predictors(service: Any) -> None:
    devices = {d["name"]: d for d in requests.get(f"{service.url}/devices", timeout=30).json()}
    assert {"cpu-1t", "cpu-2t"} <= set(devices)
    assert devices["cpu-1t"]["profile"]["intra_op_threads"] == 1
    preds = {(p["space"], p["kind"]): p for p in devices["cpu-1t"]["predictors"]}
    assert set(preds) == {("tiny", "flops"), ("tiny", "additive")}
    assert preds[("tiny", "additive")]["split"] == "test"
    assert 0 <= preds[("tiny", "additive")]["metrics"]["mape"] < 0.2
    assert devices["cpu-2t"]["predictors"] == []


def test_spaces_list_choices(service: Any) -> None:
    spaces = {s["name"]: s for s in requests.get(f"{service.url}/spaces", timeout=30).json()}
    assert {"tiny", "ofa_mbv3", "cifar_mbv3"} <= set(spaces)
    tiny = spaces["tiny"]
    assert tiny["kernel_sizes"] == [3, 5]
    assert tiny["architectures"] == 400
    assert spaces["ofa_mbv3"]["n_stages"] == 5


def test_spaces_list_every_family_with_what_prices_it(service: Any) -> None:
    spaces = {s["name"]: s for s in requests.get(f"{service.url}/spaces", timeout=30).json()}
    assert {"tiny", "gpt_tiny", "gpt2"} <= set(spaces)
    for name in ("tiny", "gpt_tiny"):
        sp, out = get_family_space(name), spaces[name]
        assert out["family"] == sp.family
        assert out["architectures"] == sp.size()
        assert out["spec"]["name"] == name
        for which in ("largest", "smallest"):
            arch = getattr(sp, which)()
            assert out[which] == {"arch": arch.to_dict(), "arch_hash": arch.hash,
                                  "macs": sp.macs(arch), "params": sp.params(arch)}
    assert "additive" in spaces["tiny"]["latency_kinds"]
    gpt = spaces["gpt_tiny"]
    assert gpt["family"] == "gpt"
    # per device workload
    assert gpt["latency_kinds"] == ["additive", "flops", "gbdt", "structure", "transfer"]
    assert gpt["spec"]["n_layer"] == [1, 2, 3]
    assert gpt["kernel_sizes"] is None
    assert gpt["n_stages"] is None


def test_predict_refuses_a_device_whose_workload_the_space_cannot_run_in_one_line(
        service: Any) -> None:
    cases = [("cpu-1t", "gpt_tiny", [_gpt_arch()],
              "device 'cpu-1t' has no workload; space 'gpt_tiny' of the 'gpt' family is timed "
              "on a profile that says prefill or decode"),
             ("cpu-1t-decode256", "tiny", _archs(1, seed=0),
              "device 'cpu-1t-decode256' times a language model (decode at context 256 (KV "
              "cache)); space 'tiny' of the 'ofa' family is timed on a device without a "
              "workload")]
    for device, space, archs, words in cases:
        r = requests.post(f"{service.url}/latency/predict", timeout=30,
                          json={"device": device, "space": space, "archs": archs})
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert error["loc"] == ["body", "device"]
        assert "\n" not in error["msg"]
        assert words in error["msg"]


def test_predict_matches_python_api(service: Any, service_env: dict[str, Any]) -> None:
    archs = _archs(12, seed=3)
    parsed = [get_space("tiny").parse(a) for a in archs]
    r = _predict(service.url, archs, hashes=True)
    assert r.status_code == 200, r.text
    body = r.json()
    best = load_predictor("cpu-1t", "tiny", db=service_env["db"])  # best held-out MAPE
    assert body["kind"] == best.kind
    assert body["latency_ms"] == pytest.approx(list(best.predict(parsed)), rel=1e-9)
    assert body["hashes"] == [a.hash for a in parsed]

    r = _predict(service.url, archs[:1], kind="flops")
    flops = load_predictor("cpu-1t", "tiny", "flops", db=service_env["db"])
    assert r.json()["kind"] == "flops"
    assert r.json()["hashes"] is None
    assert r.json()["latency_ms"] == pytest.approx(list(flops.predict(parsed[:1])), rel=1e-9)


def test_concurrent_predicts_each_get_their_own_answers(service: Any,
                                                        service_env: dict[str, Any]) -> None:
    """48 requests at once, of 1 to 20 architectures, merged into batches by the service:
    each answer is the Python API's for that request's architectures, in order."""
    rng = np.random.default_rng(1)
    pool = _archs(200, seed=7)
    requests_ = [[pool[i] for i in rng.choice(200, size=int(rng.integers(1, 21)),
                                              replace=False)] for _ in range(48)]
    kinds = ["additive" if i % 3 else "flops" for i in range(48)]
    with ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(lambda rk: _predict(service.url, rk[0], kind=rk[1]),
                              zip(requests_, kinds, strict=True)))
    sp = get_space("tiny")
    preds = {k: load_predictor("cpu-1t", "tiny", k, db=service_env["db"])
             for k in ("additive", "flops")}
    for archs, kind, r in zip(requests_, kinds, answers, strict=True):
        assert r.status_code == 200, r.text
        assert r.json()["kind"] == kind
        expected = preds[kind].predict([sp.parse(a) for a in archs])
        assert r.json()["latency_ms"] == pytest.approx(list(expected), rel=1e-9)


def test_concurrent_predicts_with_refused_architectures_each_get_their_own_answer(
        service: Any, service_env: dict[str, Any]) -> None:
    """48 requests at once, every fourth with one architecture its space refuses: those get
    their own 422 naming that architecture, and every other request its own predictions,
    whatever batch it shared with a refused one."""
    rng = np.random.default_rng(2)
    pool = _archs(200, seed=8)
    cases = []
    for i in range(48):
        archs = [pool[j] for j in rng.choice(200, size=int(rng.integers(1, 11)), replace=False)]
        bad = int(rng.integers(len(archs))) if i % 4 == 0 else None
        if bad is not None:
            archs[bad] = {**archs[bad], "ks": [4] * len(archs[bad]["ks"])}
        cases.append((archs, bad))
    with ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(lambda c: _predict(service.url, c[0], kind="additive"), cases))
    sp = get_space("tiny")
    pred = load_predictor("cpu-1t", "tiny", "additive", db=service_env["db"])
    for (archs, bad), r in zip(cases, answers, strict=True):
        if bad is None:
            assert r.status_code == 200, r.text
            expected = pred.predict([sp.parse(a) for a in archs])
            assert r.json()["latency_ms"] == pytest.approx(list(expected), rel=1e-9)
        else:
            assert r.status_code == 422, r.text
            [error] = r.json()["detail"]
            assert error["loc"][:3] == ["body", "archs", bad]
            assert "kernel size must be one of [3, 5], got 4" in error["msg"]


def _gpt_arch() -> dict[str, Any]:
    return get_family_space("gpt_tiny").largest().to_dict()


def _bad_kernel() -> dict[str, Any]:
    a = _archs(1)[0]
    a["ks"][0] = 4
    return a


@pytest.mark.parametrize(("body", "loc", "needle"), [
    ({"space": "tiny", "archs": _archs(1)}, ["body", "device"], "required"),
    ({"device": "../../etc", "space": "tiny", "archs": _archs(1)}, ["body", "device"],
     "pattern"),
    ({"device": "nope", "space": "tiny", "archs": _archs(1)}, ["body", "device"],
     "must be one of cpu-1t"),
    ({"device": "cpu-1t", "space": "huge", "archs": _archs(1)}, ["body", "space"],
     "must be one of"),
    ({"device": "cpu-1t", "space": "tiny", "archs": []}, ["body", "archs"], "at least 1"),
    ({"device": "cpu-1t", "space": "tiny", "archs": _archs(51)}, ["body", "archs"],
     "at most 50 architectures"),
    ({"device": "cpu-1t", "space": "tiny", "archs": [_archs(2)[0], _bad_kernel()]},
     ["body", "archs", 1], "kernel size must be one of [3, 5], got 4"),
    ({"device": "cpu-1t", "space": "tiny", "archs": [{**_archs(1)[0], "r": "16"}]},
     ["body", "archs", 0, "r"], "r must be one of [16, 24] for space tiny, got '16'"),
    ({"device": "cpu-1t", "space": "tiny", "archs": [{**_archs(1)[0], "x": 1}]},
     ["body", "archs", 0], "unknown field(s) ['x']; allowed: ks, e, d, r"),
    ({"device": "cpu-1t", "space": "tiny", "archs": [{**_archs(1)[0], "ks": [3, 3.0, 3, 3]}]},
     ["body", "archs", 0, "ks", 1], "ks[1] must be an int, got 3.0"),
    ({"device": "cpu-1t", "space": "tiny", "archs": ["{}"]}, ["body", "archs", 0],
     "dictionary"),
    ({"device": "cpu-1t", "space": "tiny", "archs": [_gpt_arch()]}, ["body", "archs", 0],
     "unknown field(s) ['mlp', 'n_embd', 'n_head', 'n_layer']"),
    ({"device": "cpu-1t", "space": "tiny", "archs": _archs(1), "kind": "magic"},
     ["body", "kind"], "flops"),
    ({"device": "cpu-1t", "space": "tiny", "archs": _archs(1), "typo": 1},
     ["body", "typo"], "extra"),
])
def test_bad_predict_input_is_a_422_naming_the_field(
        service: Any, body: dict[str, Any], loc: list[Any], needle: str) -> None:
    r = requests.post(f"{service.url}/latency/predict", json=body, timeout=30)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    hit = [e for e in errors if e["loc"] == loc]
    assert hit, errors
    assert needle.lower() in hit[0]["msg"].lower()


def test_predict_without_a_fitted_predictor_says_how_to_fit_one(service: Any) -> None:
    r = requests.post(f"{service.url}/latency/predict", timeout=30,
                      json={"device": "cpu-2t", "space": "tiny", "archs": _archs(1)})
    assert r.status_code == 404
    assert "nas latency fit --device cpu-2t --space tiny" in r.json()["detail"]


def test_request_size_limits(service: Any) -> None:
    big = b'{"device": "cpu-1t", "space": "tiny", "archs": [' + b" " * (300 * 1024) + b"]}"
    r = requests.post(f"{service.url}/latency/predict", data=big, timeout=30,
                      headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "limit of 262144 bytes" in r.json()["detail"]

    def chunks() -> Any:  # no Content-Length: the limit still holds
        yield b'{"device": "cpu-1t", "space": "tiny", "archs": ['
        for _ in range(300):
            yield b" " * 1024
        yield b"]}"

    r = requests.post(f"{service.url}/latency/predict", data=chunks(), timeout=30,
                      headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = requests.post(f"{service.url}/latency/predict", data=b"not json", timeout=30,
                      headers={"content-type": "application/json"})
    assert r.status_code == 422


@pytest.mark.parametrize("path", [
    "/searches/..%2F..%2Fetc%2Fpasswd",
    "/searches/0123456789ABCDEF",
    "/exports/..%2Fexports/manifest.json",
    "/exports/../../../../etc/passwd",
    "/exports/0123456789abcdef/..%2F..%2Fsearches.sqlite",
])
def test_ids_and_file_names_are_checked_before_any_file_access(service: Any, path: str) -> None:
    status, text = _raw_get(service.url, path)
    assert status in (404, 422), (status, text)
    assert "root:" not in text
    assert "SQLite" not in text


def test_unknown_search_and_export_are_404(service: Any) -> None:
    for path in ("/searches/0123456789abcdef", "/searches/0123456789abcdef/report",
                 "/exports/0123456789abcdef", "/exports/0123456789abcdef/model.onnx"):
        r = requests.get(f"{service.url}{path}", timeout=10)
        assert r.status_code == 404, (path, r.text)
    r = requests.delete(f"{service.url}/searches/0123456789abcdef", timeout=10)
    assert r.status_code == 404
    r = requests.post(f"{service.url}/exports", json={"study": "nope", "trial": 0}, timeout=60)
    assert r.status_code == 404
    assert "no study 'nope'" in json.dumps(r.json())
    r = requests.post(f"{service.url}/exports", json={"study": "a/b", "trial": -1}, timeout=10)
    assert r.status_code == 422
    assert {tuple(e["loc"]) for e in r.json()["detail"]} == {("body", "study"),
                                                              ("body", "trial")}

"""Bearer-token auth: off on loopback without a token, on whenever one is configured and
required (generated if need be) off loopback; /health always open."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import requests

from nas.serve import is_loopback, resolve_token

TOKEN = secrets.token_urlsafe(24)
ROUTES = [("get", "/devices"), ("get", "/spaces"), ("get", "/docs"), ("get", "/openapi.json"),
          ("post", "/latency/predict"), ("get", "/searches"), ("post", "/searches"),
          ("get", "/searches/0123456789abcdef"), ("delete", "/searches/0123456789abcdef"),
          ("get", "/searches/0123456789abcdef/report"), ("post", "/exports"),
          ("get", "/exports/0123456789abcdef/model.onnx"), ("get", "/no/such/route")]


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.org", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_from_env_else_generated_off_loopback() -> None:
    assert resolve_token("127.0.0.1", {}) == (None, False)
    assert resolve_token("127.0.0.1", {"NAS_API_TOKEN": TOKEN}) == (TOKEN, False)
    assert resolve_token("0.0.0.0", {"NAS_API_TOKEN": TOKEN}) == (TOKEN, False)
    a, generated = resolve_token("0.0.0.0", {})
    b, _ = resolve_token("0.0.0.0", {})
    assert generated
    assert len(a) >= 32
    assert a != b


def test_serve_cli_refuses_bad_settings_in_one_line(run_nas: Any) -> None:
    code, _, err = run_nas(["serve", "--ingress", "magic"])
    assert code == 2
    assert err.strip().splitlines() == [
        "error: ingress must be one of ['direct', 'proxy'], got 'magic'"]


@pytest.mark.ray
def test_without_token_every_route_is_open_on_loopback(service: Any) -> None:
    assert service.settings.token is None
    for method, path in ROUTES[:3]:
        assert requests.request(method, f"{service.url}{path}", timeout=30).status_code == 200


@pytest.mark.ray
def test_with_a_token_every_route_but_health_needs_it(nas_serve: Any) -> None:
    """Against a real `nas serve` started with $NAS_API_TOKEN (the package's fixture), not a
    redeploy of the in-process service (which cost a minute)."""
    url, token = nas_serve.url, nas_serve.token
    assert requests.get(f"{url}/health", timeout=10).status_code == 200
    for method, path in ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong-token-000000000"},
                        {"Authorization": token}, {"Authorization": f"Basic {token}"}):
            r = requests.request(method, f"{url}{path}", headers=headers, timeout=30)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
    good = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{url}/devices", headers=good, timeout=30).status_code == 200
    assert requests.get(f"{url}/docs", headers=good, timeout=30).status_code == 200
    r = requests.post(f"{url}/latency/predict", headers=good, timeout=30,
                      json={"device": "cpu-1t", "space": "tiny", "archs": [
                          {"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": 16}]})
    assert r.status_code == 200
    assert len(r.json()["latency_ms"]) == 1
    # a wrong token is refused before the body is even read: no 413 for a huge one
    r = requests.post(f"{url}/latency/predict", data=b"x" * (1 << 20), timeout=30)
    assert r.status_code == 401

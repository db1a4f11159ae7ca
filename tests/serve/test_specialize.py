"""POST /specialize: a predictor-only search answered in the response, on the real service."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from nas.latency import load_predictor
from nas.space import get_space

BODY: dict[str, Any] = {"space": "ofa_mbv3", "proxy": "ofa-imagenet",
                        "objectives": ["accuracy", "latency:note10"],
                        "constraints": {"latency:note10": 30},
                        "budgets": {"latency:note10": [15, 20]}}


def _post(service: Any, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{service.url}/specialize", json=body, timeout=120)


def test_specialize_answers_the_front_and_the_best_per_budget(service: Any) -> None:
    r = _post(service, BODY)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out["best"]) == {"latency:note10<=15", "latency:note10<=20",
                                "latency:note10<=30"}
    sp = get_space("ofa_mbv3")
    lat = load_predictor("note10", "ofa_mbv3").predict(
        [sp.parse(f["arch"]) for f in out["front"]])
    assert len(out["front"]) >= 10 and (lat <= 30).all()  # by the table, independently
    for key, pick in out["best"].items():
        assert pick["latency_ms"]["note10"] <= float(key.split("<=")[1])
    assert out["best"]["latency:note10<=15"]["accuracy"] < \
        out["best"]["latency:note10<=30"]["accuracy"]


@pytest.mark.timing
def test_a_warm_service_specializes_within_three_seconds(service: Any) -> None:
    """The search runs inside the request, so it must stay well within a client's patience.

    Designed false-failure rate: below 1 in 1,000 runs, with two CPU-burning neighbours on a
    2-core machine. On a quiet machine a warm request takes 0.67 s (median of 15; p90 0.68 s;
    RESULTS.md "POST /specialize"). The bound is 4.5 times that and only the fastest of five
    requests is held to it, so a false failure needs the replica to get under a fifth of a
    core for five requests in a row (some 15 s); two neighbours leave it about two thirds.
    """
    assert _post(service, BODY).status_code == 200  # warm: the predictors are loaded
    times = []
    for seed in range(1, 6):
        t0 = time.perf_counter()
        assert _post(service, {**BODY, "seed": seed}).status_code == 200
        times.append(time.perf_counter() - t0)
    assert min(times) < 3.0, times


def test_specialize_refuses_what_it_cannot_do_in_one_line(service: Any) -> None:
    cases = [
        ({"proxy": "inherited"}, "proxy", "POST /searches"),
        ({"objectives": ["accuracy", "latency:nowhere"]}, "objectives", "nowhere"),
        ({"generations": 2000, "population": 1000}, "generations", "above"),
        ({"constraints": {"latency:note10": 0.001}}, None, "cannot be met"),
        ({"proxy": "predictor:path=/etc/passwd"}, "proxy", "outside"),
        ({"budgets": {"accuracy": [1]}}, None, "budgets"),
        ({"space": "tiny"}, "proxy", "for space ofa_mbv3 only"),
    ]
    for change, field, words in cases:
        r = _post(service, {**BODY, **change})
        assert r.status_code == 422, (change, r.text)
        detail = r.json()["detail"][0]
        assert words in detail["msg"], (change, detail)
        if field:
            assert detail["loc"][:2] == ["body", field], (change, detail)

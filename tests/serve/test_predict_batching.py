"""POST /latency/predict on the replica's own ASGI app (its guard, its shorter way for a
well-formed predict and its FastAPI routes; no Ray Serve in front, as test_disconnect.py):
every answer equals the FastAPI route's byte for byte, concurrent requests merged into
batches each get their own answer (the Python API's prediction, or their own 422), and the
batcher keeps one predictor's failure to its own requests."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas.latency import load_predictor
from nas.serve import ServiceSettings
from nas.serve._app import Replica, build_api
from nas.serve._batch import THREAD_ABOVE, Batcher, Job
from nas.serve._guard import Guard
from nas.serve._lane import PredictLane
from nas.space import get_family_space, get_space

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


async def _call(app: Any, body: bytes | list[bytes], *, path: str = "/latency/predict",
                content_type: bytes | None = b"application/json") -> Answer:
    """POST ``body`` (one message, or the list's chunks one message each) to ``app`` as a
    server does; the status, headers and body of the answer."""
    chunks = body if isinstance(body, list) else [body]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]
    answered = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    headers = [(b"content-type", content_type)] if content_type is not None else []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1), "headers": headers}
    await app(scope, receive, send)
    start = sent[0]
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], list(start.get("headers", [])), data


class _Counting:
    """A FastAPI app that counts the requests it is passed."""

    def __init__(self, app: Any) -> None:
        self.app, self.calls = app, 0
        self.exception_handlers = app.exception_handlers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


@pytest.fixture()
def replica(service_env: dict[str, Any], tmp_path: Path) -> Replica:
    return Replica(ServiceSettings(db=service_env["db"], state_dir=str(tmp_path / "state"),
                                   max_archs=50, max_body_bytes=256 * 1024))


def _apps(svc: Replica) -> tuple[Any, Any, _Counting]:
    """The replica's app (guard, shorter way, FastAPI), the same without the shorter way, and
    the counter of what the shorter way passed on to FastAPI."""
    limit = svc.settings.max_body_bytes
    fastapi = _Counting(build_api(svc))
    return (Guard(PredictLane(fastapi, svc), token=None, max_body_bytes=limit),  # type: ignore[arg-type]
            Guard(build_api(svc), token=None, max_body_bytes=limit), fastapi)


def _archs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return [a.to_dict() for a in get_space("tiny").sample_many(n, seed=seed)]


def _body(archs: list[Any], **extra: Any) -> bytes:
    return json.dumps({"device": "cpu-1t", "space": "tiny", "archs": archs, **extra}).encode()


def _bad_kernel(seed: int = 0) -> dict[str, Any]:
    a = _archs(1, seed=seed)[0]
    a["ks"][0] = 4
    return a


def test_the_replica_serves_its_predicts_the_shorter_way(replica: Replica) -> None:
    app = replica.__serve_build_asgi_app__()
    assert isinstance(app, Guard)
    assert isinstance(app.app, PredictLane)


GOOD: list[tuple[str, bytes]] = [
    ("one", _body(_archs(1))),
    ("several with hashes", _body(_archs(5, seed=2), hashes=True)),
    ("kind flops", _body(_archs(2, seed=3), kind="flops")),
    ("kind additive, hashes false", _body(_archs(1, seed=4), kind="additive", hashes=False)),
    ("a language model on a decode profile",
     json.dumps({"device": "cpu-1t-decode256", "space": "gpt_shakespeare", "hashes": True,
                 "archs": [a.to_dict() for a in get_family_space("gpt_shakespeare")
                           .sample_many(3, seed=0)]}).encode()),
]
REFUSED: list[tuple[str, bytes]] = [
    ("a bad architecture", _body([_archs(1)[0], _bad_kernel()])),
    ("a field of the wrong type", _body([{**_archs(1)[0], "r": "16"}])),
    ("an unknown field in an architecture", _body([{**_archs(1)[0], "x": 1}])),
    ("an architecture of another family",
     _body([get_family_space("gpt_tiny").largest().to_dict()])),
    ("too many architectures", _body(_archs(51))),
    ("no architecture", _body([])),
    ("an unknown device", json.dumps({"device": "nope", "space": "tiny",
                                      "archs": _archs(1)}).encode()),
    ("a device without a predictor", json.dumps({"device": "cpu-2t", "space": "tiny",
                                                 "archs": _archs(1)}).encode()),
    ("a device whose workload the space cannot run",
     json.dumps({"device": "cpu-1t-decode256", "space": "tiny",
                 "archs": _archs(1)}).encode()),
    ("a space no kind prices", json.dumps({"device": "cpu-1t", "space": "gpt_tiny",
                                           "archs": _archs(1)}).encode()),
    ("an unknown space", json.dumps({"device": "cpu-1t", "space": "huge",
                                     "archs": _archs(1)}).encode()),
    ("an unknown kind", _body(_archs(1), kind="magic")),
    ("a kind that does not price the space",
     json.dumps({"device": "cpu-1t-decode256", "space": "gpt_shakespeare", "kind": "lut",
                 "archs": [get_family_space("gpt_shakespeare").largest().to_dict()]}).encode()),
    ("an unknown field", _body(_archs(1), typo=1)),
    ("hashes not a boolean", _body(_archs(1), hashes="yes")),
    ("NaN in an architecture", _body([{**_archs(1)[0], "r": math.nan}])),
    ("not JSON", b"not json"),
    ("a JSON list", b"[]"),
    ("a JSON string", b'"archs"'),
    ("an empty body", b""),
    ("JSON nested too deep", b"[" * 50_000 + b"]" * 50_000),
    ("bytes that are no text", b'{"device": "\xff"}'),
]


@pytest.mark.parametrize(("case", "body"), GOOD + REFUSED, ids=[c for c, _ in GOOD + REFUSED])
def test_every_answer_is_the_fastapi_route_s_own(replica: Replica, case: str,
                                                 body: bytes) -> None:
    """Status, headers and body, byte for byte: the shorter way answers well-formed requests
    (200 and the route's own errors), FastAPI everything else."""
    lane, plain, fastapi = _apps(replica)

    async def both() -> tuple[Answer, Answer]:
        return await _call(lane, body), await _call(plain, body)

    got, expected = asyncio.run(both())
    assert got == expected
    if (case, body) in GOOD:
        assert got[0] == 200, got
        assert fastapi.calls == 0  # answered without FastAPI
    else:
        assert got[0] in (400, 404, 422), got


@pytest.mark.parametrize("content_type", [b"application/json; charset=utf-8",
                                          b"Application/JSON", b"text/plain", None,
                                          b"application/merge-patch+json"])
def test_other_media_types_and_chunked_bodies_are_answered_alike(
        replica: Replica, content_type: bytes | None) -> None:
    lane, plain, _ = _apps(replica)
    body = _body(_archs(3, seed=5))
    chunked = [body[:10], body[10:40], body[40:]]

    async def run() -> list[Answer]:
        return [await _call(lane, body, content_type=content_type),
                await _call(plain, body, content_type=content_type),
                await _call(lane, chunked, content_type=content_type),
                await _call(plain, chunked, content_type=content_type)]

    lane_one, plain_one, lane_chunked, plain_chunked = asyncio.run(run())
    assert lane_one == plain_one
    assert lane_chunked == plain_chunked == lane_one


def test_concurrent_requests_each_get_their_own_answer(
        replica: Replica, service_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """48 requests at once, merged into batches: a valid one gets the Python API's
    predictions for its architectures, in order, whatever else is in its batch; one with a
    bad architecture gets its own 422 naming it; one with an unknown kind its own 422."""
    import nas.serve._batch as batch

    calls: list[int] = []
    real = batch.predict_jobs

    def counted(jobs: list[Job], predictor: Any) -> Any:
        calls.append(len(jobs))
        return real(jobs, predictor)

    monkeypatch.setattr(batch, "predict_jobs", counted)
    app = replica.__serve_build_asgi_app__()
    rng = np.random.default_rng(1)
    pool = _archs(200, seed=7)
    cases: list[tuple[str, list[dict[str, Any]], str, int | None]] = []
    for i in range(48):
        archs = [pool[j] for j in rng.choice(200, size=int(rng.integers(1, 21)), replace=False)]
        kind = "additive" if i % 3 else "flops"
        bad = None
        if i % 5 == 0:  # one architecture of this request is refused
            bad = int(rng.integers(len(archs)))
            archs[bad] = _bad_kernel(seed=i)
        if i % 11 == 0:
            kind = "magic"
        cases.append((f"{i}", archs, kind, bad))

    async def run() -> list[Answer]:
        await _call(app, _body(pool[:1], kind="flops"))  # the predictors loaded first:
        await _call(app, _body(pool[:1], kind="additive"))  # then the requests meet
        return await asyncio.gather(*(_call(app, _body(archs, kind=kind, hashes=True))
                                      for _, archs, kind, _ in cases))

    answers = asyncio.run(run())
    sp = get_space("tiny")
    preds = {k: load_predictor("cpu-1t", "tiny", k, db=service_env["db"])
             for k in ("additive", "flops")}
    n_valid = 0
    for (_, archs, kind, bad), (status, _, raw) in zip(cases, answers, strict=True):
        body = json.loads(raw)
        if kind == "magic":
            assert status == 422, body
            assert [e["loc"] for e in body["detail"]] == [["body", "kind"]]
        elif bad is not None:
            assert status == 422, body
            [error] = body["detail"]
            assert error["loc"][:3] == ["body", "archs", bad]
            assert "kernel size must be one of [3, 5], got 4" in error["msg"]
        else:
            n_valid += 1
            assert status == 200, body
            parsed = [sp.parse(a) for a in archs]
            assert body["kind"] == kind
            assert body["latency_ms"] == pytest.approx(list(preds[kind].predict(parsed)),
                                                       rel=1e-9)
            assert body["hashes"] == [a.hash for a in parsed]
    assert n_valid >= 20
    assert max(calls) > 1  # requests were merged: a batch held several
    assert sum(calls) == n_valid + 2


class _Doubling:
    kind = "double"

    def predict(self, archs: list[Any]) -> np.ndarray:
        return np.asarray(archs, dtype=float) * 2


class _Failing:
    kind = "failing"

    def predict(self, archs: list[Any]) -> np.ndarray:
        raise RuntimeError("this predictor fails")


_PREDICTORS: dict[Any, Any] = {("d", "s", "ok"): _Doubling(), ("d", "s", "bad"): _Failing()}


def test_one_predictor_s_failure_fails_only_its_own_requests() -> None:
    batcher = Batcher(_PREDICTORS.__getitem__, max_batch_size=64, wait_s=0.01)

    async def run() -> list[Any]:
        jobs = [Job(("d", "s", "bad" if i % 4 == 0 else "ok"), [i, i + 0.5]) for i in range(12)]
        return await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True)

    for i, got in enumerate(asyncio.run(run())):
        if i % 4 == 0:
            assert isinstance(got, RuntimeError)
            assert str(got) == "this predictor fails"
        else:
            assert list(got) == [2 * i, 2 * i + 1]


def test_a_full_batch_is_priced_at_once_and_a_cancelled_request_is_left_out() -> None:
    priced: list[list[Any]] = []

    class Recording(_Doubling):
        def predict(self, archs: list[Any]) -> np.ndarray:
            priced.append(list(archs))
            return super().predict(archs)

    batcher = Batcher(lambda key: Recording(), max_batch_size=4, wait_s=60.0)

    async def run() -> list[Any]:
        gone = asyncio.ensure_future(batcher.submit(Job(("d", "s", "ok"), [100])))
        await asyncio.sleep(0)  # it waits in the batch
        gone.cancel()
        # four more fill the batch: priced now, not after the 60 s wait
        return await asyncio.wait_for(asyncio.gather(
            *(batcher.submit(Job(("d", "s", "ok"), [i])) for i in range(4))), timeout=30)

    got = asyncio.run(run())
    assert [list(g) for g in got] == [[0], [2], [4], [6]]
    assert priced == [[0, 1, 2, 3]]


def test_a_large_batch_is_priced_in_a_thread_with_the_same_answers() -> None:
    batcher = Batcher(_PREDICTORS.__getitem__, max_batch_size=64, wait_s=0.001)
    big = list(range(THREAD_ABOVE + 1))

    async def run() -> list[Any]:
        return await asyncio.gather(batcher.submit(Job(("d", "s", "ok"), big)),
                                    batcher.submit(Job(("d", "s", "ok"), [7])))

    large, small = asyncio.run(run())
    assert list(large) == [2 * x for x in big]
    assert list(small) == [14]

"""A /specialize whose client goes away stops (issue 24): the replica's own ASGI app (its
guard, routes and the search; no Ray Serve in front), driven as a server drives it, with the
client's ``http.disconnect`` arriving while the search runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from nas.serve import ServiceSettings
from nas.serve._app import Replica

HEAVY: dict[str, Any] = {"space": "ofa_mbv3", "proxy": "ofa-imagenet",
                         "objectives": ["accuracy", "latency:note10"],
                         "population": 1000, "generations": 200}
LIGHT: dict[str, Any] = {**HEAVY, "population": 10, "generations": 2}


async def _post(app: Any, body: dict[str, Any], *, hang_up: bool) -> tuple[int, Any]:
    """POST /specialize; with ``hang_up`` the client disconnects as soon as it has sent the
    body (else it waits for the answer). Returns the status and the JSON answer."""
    data = json.dumps(body).encode()
    messages = [{"type": "http.request", "body": data, "more_body": False}]
    answered = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        if not hang_up:
            await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/specialize", "raw_path": b"",
             "root_path": "", "query_string": b"", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1),
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(data)).encode())]}
    await app(scope, receive, send)
    body_bytes = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body_bytes)


def test_a_specialize_whose_client_hangs_up_stops_and_frees_its_slot(tmp_path: Path) -> None:
    app = Replica(ServiceSettings(state_dir=str(tmp_path))).__serve_build_asgi_app__()

    async def scenario() -> list[tuple[int, Any]]:
        return [await _post(app, LIGHT, hang_up=False),  # loads what the search needs
                await _post(app, HEAVY, hang_up=True),
                await _post(app, LIGHT, hang_up=False)]

    warm, abandoned, after = asyncio.run(scenario())
    assert warm[0] == 200, warm
    # the heavy search did not run to its end: it stopped when its client went away
    assert abandoned[0] != 200
    assert "stopped before it finished" in abandoned[1]["detail"][0]["msg"]
    # and its slot (one by default) is free again
    assert after[0] == 200, after
    assert after[1]["front"]

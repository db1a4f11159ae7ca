"""A shorter way through the replica for a well-formed ``POST /latency/predict``.

FastAPI's way to a route (its middleware stack, routing, dependency solving, the body read
twice over) costs a replica more than pricing one architecture does. :class:`PredictLane`
sits in front of the FastAPI app and answers the plain case itself: a JSON body that is an
object and validates as :class:`~nas.serve._schemas.PredictRequest`, exactly as FastAPI reads
and validates it (``json.loads``, then the model in Python mode), answered by the same
function as the route (:func:`~nas.serve._app.predict_answer`), and an error raised there by
the exception handler FastAPI would pick. Everything else (another route, another media
type, a body that is not JSON or does not validate, an error with no handler) goes to the
FastAPI app untouched, with the body replayed: every answer is the route's own.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

from nas.serve._guard import ASGIApp, Message, Receive, Scope, Send, _path

if TYPE_CHECKING:
    from fastapi import FastAPI

    from nas.serve._app import Replica

__all__ = ["PATH", "PredictLane"]

#: the route the lane answers
PATH = "/latency/predict"


def _json_media_type(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the first Content-Type header is ``application/json`` (parameters aside: the
    body is read as ``json.loads`` reads bytes, whatever charset it names)."""
    for key, value in headers:
        if key == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


class PredictLane:
    """Answers well-formed predict requests without FastAPI's machinery; passes everything
    else to ``app``.

    Args:
        app: the replica's FastAPI app (its exception handlers answer the lane's errors).
        svc: the replica whose predictors answer.
    """

    def __init__(self, app: FastAPI, svc: Replica) -> None:
        self.app: ASGIApp = app
        self.handlers: dict[Any, Any] = app.exception_handlers
        self.svc = svc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "POST" or _path(scope) != PATH
                or not _json_media_type(scope.get("headers") or [])):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: FastAPI's case
                await self.app(scope, _replay(chunks, receive, message), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replay = _replay(chunks, receive)
        req = _request(b"".join(chunks))
        if req is None:
            await self.app(scope, replay, send)
            return
        from nas.serve._app import predict_answer

        try:
            response = await predict_answer(self.svc, req)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:  # a bug: FastAPI's own 500
                await self.app(scope, _replay(chunks, receive), send)
                return
            from starlette.concurrency import run_in_threadpool
            from starlette.requests import Request

            request = Request(scope, replay)
            response = (await handler(request, exc) if inspect.iscoroutinefunction(handler)
                        else await run_in_threadpool(handler, request, exc))
        await response(scope, replay, send)

    def _handler(self, exc: Exception) -> Any:
        """The exception handler Starlette picks for ``exc`` in a route (by status code for
        an HTTPException, then by class); None for the catch-all 500 one."""
        from starlette.exceptions import HTTPException

        status = exc.status_code if isinstance(exc, HTTPException) else None
        if status is not None and status != 500 and status in self.handlers:
            return self.handlers[status]
        for cls in type(exc).__mro__:
            if cls in self.handlers and cls is not Exception:
                return self.handlers[cls]
        return None


def _request(body: bytes) -> Any:
    """``body`` as a validated PredictRequest, or None when FastAPI would refuse it (or might
    read it another way)."""
    from nas.serve._schemas import PredictRequest

    if not body:
        return None
    try:
        data = json.loads(body)
    except Exception:  # not JSON, not Unicode text, nested too deep: FastAPI answers
        return None
    if type(data) is not dict:
        return None
    try:
        return PredictRequest.model_validate(data)
    except Exception:  # a ValidationError: FastAPI's 422 says it
        return None


def _replay(chunks: list[bytes], receive: Receive, last: Message | None = None) -> Receive:
    """A ``receive`` that gives the body read so far (one message; then ``last`` when the
    read ended on it), then the client's own messages."""
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks),
                               "more_body": last is not None}]
    if last is not None:
        pending.append(last)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed

"""The ASGI layer in front of every route: bearer-token check and request-size limit.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: it runs on every predict request,
and the plain form costs microseconds.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["PUBLIC_PATHS", "RAY_PATHS_PREFIX", "Guard", "RayPathsClosed", "ray_middlewares"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes that never need the token.
PUBLIC_PATHS = frozenset({"/health"})
#: Ray Serve answers ``/-/routes`` and ``/-/healthz`` itself, before the app and its token
#: check, on every port it opens (its HTTP proxy's and the replica's own).
RAY_PATHS_PREFIX = "/-/"


async def _reply(send: Send, status: int, detail: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Refuses requests without the bearer token (401) or with a body above the limit (413).

    Args:
        app: the wrapped ASGI app.
        token: the required token; ``None`` turns the check off.
        max_body_bytes: the largest body accepted; the body is read here in full (up to the
            limit) and replayed to the app, so a chunked upload cannot get around it.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        if not self._authorized(_path(scope), headers):
            await _reply(send, 401, "missing or wrong bearer token (Authorization: Bearer "
                         "<token>)", [(b"www-authenticate", b"Bearer")])
            return
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        body = await self._read_body(headers, receive, send)
        if body is None:  # refused (answered already), or the client went away
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorized(self, path: str, headers: list[tuple[bytes, bytes]]) -> bool:
        if self.expected is None or path in PUBLIC_PATHS:
            return True
        given = next((v for k, v in headers if k == b"authorization"), b"")
        return secrets.compare_digest(given, self.expected)

    async def _read_body(self, headers: list[tuple[bytes, bytes]], receive: Receive,
                         send: Send) -> bytes | None:
        """The whole body, or None once a refusal (400, 413) is sent or the client left."""
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _reply(send, 400, "bad Content-Length header")
                return None
            if declared > self.max_body_bytes:
                await _reply(send, 413, f"request body of {declared} bytes is above the limit "
                             f"of {self.max_body_bytes} bytes")
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _reply(send, 413, f"request body is above the limit of "
                             f"{self.max_body_bytes} bytes")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _path(scope: Scope) -> str:
    """The request's path below the app's root path."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


class RayPathsClosed:
    """Answers 404 to Ray Serve's own ``/-/...`` routes, on every port Serve opens.

    Serve answers those itself, outside the app and so outside :class:`Guard`'s token check;
    nothing here needs them (liveness is ``/health``). Installed in front of each of Serve's
    HTTP servers by :func:`ray_middlewares`; everything else passes through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _path(scope).startswith(RAY_PATHS_PREFIX):
            await _reply(send, 404, "not found")
            return
        await self.app(scope, receive, send)


def ray_middlewares() -> list[Any]:
    """Ray Serve's HTTP callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): the
    middlewares it puts in front of every HTTP server it starts, in its own processes."""
    from starlette.middleware import Middleware

    return [Middleware(RayPathsClosed)]

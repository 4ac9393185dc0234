"""ASGI guards in front of the service: bearer-token auth and a request size limit."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import ValidationError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes and metrics stay open so orchestrators and Prometheus need no token.
OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")


async def _reply(send: Send, status: int, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BearerTokenMiddleware:
    """401 for any request but the probes without ``Authorization: Bearer <token>``.

    With no token configured, every request passes.
    """

    def __init__(self, app: App, token: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"authorization", b"")
        if not secrets.compare_digest(given, self.expected):
            await _reply(send, 401, "missing or wrong bearer token",
                         [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """413 for a request body over ``max_bytes``, declared or streamed."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _reply(send, 413, f"request body over the limit of {self.max_bytes:,} bytes")


class RedactRequestErrors(logging.Filter):
    """Keep customer data out of logs: BentoML logs a rejected request's validation error,
    whose text quotes the input values. Log where and which rule failed, never the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            places = ", ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'} ({e['type']})"
                for e in error.errors(include_input=False, include_context=False)[:5])
            record.msg = f"{record.msg}: {error.error_count()} invalid value(s) at {places}"
            record.exc_info = None
            record.exc_text = None
        return True


def redact_request_errors() -> None:
    """Install ``RedactRequestErrors`` on the logger BentoML reports bad requests with."""
    logging.getLogger("bentoml._internal.server.http_app").addFilter(RedactRequestErrors())

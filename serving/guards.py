"""ASGI guards in front of the service: bearer-token auth and a request size limit; and a
fix to BentoML's request timeout so finished requests are let go."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bentoml.exceptions import InvalidArgument
from pydantic import ValidationError

try:
    from bentoml._internal.server.http.traffic import TimeoutMiddleware
except ImportError:  # a BentoML laid out differently: nothing to fix
    TimeoutMiddleware = None
try:
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
except ImportError:
    RunnerTrafficMetricsMiddleware = None

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes and metrics stay open so orchestrators and Prometheus need no token; so do the
# API docs (the page, its document and its assets), which hold no customer data.
OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json")
OPEN_PREFIXES = ("/static_content/",)


async def send_body(send: Send, status: int, payload: bytes,
                    content_type: bytes = b"application/json",
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A whole answer: status, content type and length, then the body."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(payload)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


async def reply_error(send: Send, status: int, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """An error answer in the service's one shape, with no detail."""
    body = json.dumps({"error": message, "detail": []}).encode()
    await send_body(send, status, body, headers=headers)


class BearerTokenMiddleware:
    """401 for any request but the probes without ``Authorization: Bearer <token>``.

    With no token configured, every request passes.
    """

    def __init__(self, app: App, token: str | None) -> None:
        self.app = app
        self.expected = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS \
                or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        scheme, _, given = dict(scope.get("headers", [])).get(b"authorization", b"").strip() \
            .partition(b" ")
        # The scheme's case does not matter (RFC 9110); the token's does.
        if scheme.lower() != b"bearer" or not secrets.compare_digest(given.strip(),
                                                                      self.expected):
            await reply_error(send, 401, "missing or wrong bearer token",
                         [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """413 for a request body over ``max_bytes``, declared or streamed; 503 (try again) when
    the bodies being read or answered at once would hold over ``max_in_flight`` bytes; 408
    when the whole body has not arrived ``body_seconds`` after the headers.

    It sits behind the token check, so a caller without the token never gets a body read.
    """

    def __init__(self, app: App, max_bytes: int, max_in_flight: int | None = None,
                 body_seconds: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight or 4 * max_bytes
        self.body_seconds = body_seconds
        self.in_flight = 0  # one event loop per worker: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        deadline = asyncio.get_running_loop().time() + self.body_seconds
        try:
            while more:
                try:
                    message = await asyncio.wait_for(
                        receive(), deadline - asyncio.get_running_loop().time())
                except TimeoutError:
                    await reply_error(send, 408, f"the request body did not arrive within "
                                                 f"{self.body_seconds:g} seconds")
                    return
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                if self.in_flight + len(chunk) > self.max_in_flight:
                    await reply_error(send, 503, "too many request bytes in flight; try again",
                                 [(b"retry-after", b"1")])
                    return
                size += len(chunk)
                self.in_flight += len(chunk)
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
        finally:
            self.in_flight -= size

    async def _too_large(self, send: Send) -> None:
        await reply_error(send, 413, f"request body over the limit of {self.max_bytes:,} bytes")


class RedactRequestErrors(logging.Filter):
    """Keep customer data out of logs: BentoML logs a rejected request's validation error,
    whose text quotes the input values. Log where and which rule failed, never the values.

    A rejected request is the client's mistake, not the server's: one WARNING line, without
    the traceback BentoML attaches to it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            places = ", ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'} ({e['type']})"
                for e in error.errors(include_input=False, include_context=False)[:5])
            self._one_line(record, f"{error.error_count()} invalid value(s) at {places}")
        elif isinstance(error, InvalidArgument):
            # Our own 400s name the field, table, rule and rows, never a value.
            self._one_line(record, str(error).splitlines()[0][:300])
        return True

    @staticmethod
    def _one_line(record: logging.LogRecord, what: str) -> None:
        record.msg = f"{record.getMessage()}: {what}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"


def redact_request_errors() -> None:
    """Install ``RedactRequestErrors`` on the logger BentoML reports bad requests with."""
    logging.getLogger("bentoml._internal.server.http_app").addFilter(RedactRequestErrors())


async def _timeout_call(self, scope: Scope, receive: Receive, send: Send) -> None:
    """BentoML's ``TimeoutMiddleware.__call__`` (1.4), with its timer cancelled once the
    request is over."""
    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def started(message: Message) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    answer = asyncio.ensure_future(self.app(scope, receive, started))
    try:
        await waiter
    except TimeoutError:
        if answer.cancel():
            await reply_error(send, 504, f"not answered within {self.timeout} seconds")
    else:
        await answer
    finally:
        timer.cancel()


def release_finished_requests() -> bool:
    """Make BentoML's request timeout let go of a request once it is answered.

    BentoML 1.4 arms one timer per request and leaves it armed after the answer, so every
    request's context (futures, tracing span) stays alive for the whole timeout. At hundreds
    of requests a second that is a few hundred thousand objects, and each full pass of the
    garbage collector over them stalled requests for 40-250 ms. Returns False (and changes
    nothing) on a BentoML whose middleware is not the one this was written against.
    """
    if TimeoutMiddleware is None or not hasattr(TimeoutMiddleware, "_set_timer_out"):
        return False
    TimeoutMiddleware.__call__ = _timeout_call
    return True


UNKNOWN_PATH = "/_unknown"
REAL_PATH = "churn.real_path"


def metric_path(path: str, known: frozenset[str]) -> str:
    """The ``endpoint`` label of a request: its route, or one bucket for every other path."""
    if path in known:
        return path
    if path.startswith(OPEN_PREFIXES):
        return OPEN_PREFIXES[0].rstrip("/")
    return UNKNOWN_PATH


def bound_metric_labels(known: frozenset[str]) -> bool:
    """Label BentoML's request metrics by route, with every unknown path in one bucket.

    BentoML 1.4 labels them by the raw path, so each distinct path a client makes up (even
    one answered 401 or 404) adds about 20 series to ``/metrics`` for good: enough random
    paths grow the worker by hundreds of MiB and make every scrape time out. The metrics
    middleware sees the bucket as the path; ``restore_path`` gives the routes the real one.
    Returns False (and changes nothing) on a BentoML laid out differently.
    """
    if RunnerTrafficMetricsMiddleware is None:
        return False
    original = getattr(RunnerTrafficMetricsMiddleware.__call__, "churn_original",
                       RunnerTrafficMetricsMiddleware.__call__)

    async def labelled(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http":
            label = metric_path(scope["path"], known)
            if label != scope["path"]:
                scope = {**scope, "path": label, REAL_PATH: scope["path"]}
        await original(self, scope, receive, send)

    labelled.churn_original = original
    RunnerTrafficMetricsMiddleware.__call__ = labelled
    return True


def restore_path(scope: Scope) -> Scope:
    """The request's own path again, after the metrics middleware has labelled it."""
    if REAL_PATH in scope:
        scope = {**scope, "path": scope[REAL_PATH]}
        del scope[REAL_PATH]
    return scope


def close_stalled_connections(seconds: float) -> int:
    """Close a connection that, for ``seconds``, neither finished sending a request's headers
    nor waited on an answer: idle sockets and headers sent a byte at a time would otherwise
    hold a file descriptor each for as long as the client likes (uvicorn only times out idle
    keep-alive connections, and only after a first request). Returns how many uvicorn
    protocol classes were patched."""
    patched = 0
    for module, name in (("uvicorn.protocols.http.h11_impl", "H11Protocol"),
                         ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol")):
        try:
            protocol = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        original = getattr(protocol.connection_made, "churn_original", protocol.connection_made)

        def connection_made(self, transport, original=original) -> None:
            original(self, transport)
            self.churn_seen = self.cycle
            self.loop.call_later(seconds, _close_if_stalled, self, seconds)

        connection_made.churn_original = original
        protocol.connection_made = connection_made
        patched += 1
    return patched


def _close_if_stalled(protocol: Any, seconds: float) -> None:
    transport = protocol.transport
    if transport is None or transport.is_closing():
        return
    cycle = protocol.cycle
    waiting = cycle is None or cycle.response_complete
    if waiting and cycle is protocol.churn_seen:  # no request's headers came in meanwhile
        transport.close()
        return
    protocol.churn_seen = cycle
    protocol.loop.call_later(seconds, _close_if_stalled, protocol, seconds)

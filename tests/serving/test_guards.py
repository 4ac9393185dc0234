"""BentoML's request timeout, as the service patches it: answered requests leave no armed
timer behind, and a request that takes too long still gets 504."""

from __future__ import annotations

import asyncio

from bentoml._internal.server.http.traffic import TimeoutMiddleware

from serving.guards import release_finished_requests


def _run(app, timeout: float) -> tuple[list[dict], int]:
    """Messages sent for one request through the middleware, and the timers still armed."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def one_request() -> int:
        await TimeoutMiddleware(app, timeout=timeout)({"type": "http"}, receive, send)
        loop = asyncio.get_running_loop()
        return sum(not handle.cancelled() for handle in loop._scheduled)

    return sent, asyncio.run(one_request())


async def _quick(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _slow(scope, receive, send) -> None:
    await asyncio.sleep(5)


def test_answered_requests_leave_no_armed_timer():
    assert release_finished_requests()
    sent, armed = _run(_quick, timeout=60)
    assert sent[0]["status"] == 200
    assert armed == 0


def test_a_request_over_the_timeout_gets_504():
    assert release_finished_requests()
    sent, _ = _run(_slow, timeout=0.05)
    assert sent[0]["status"] == 504
    assert b"not answered within 0.05 seconds" in sent[1]["body"]

"""Follow streams over a websocket: a producer on worker threads, the websocket on the event loop.

``pump`` starts the producer with an ``emit`` callback, sends each item as one JSON text message, and
ends when the producer is done, the client goes away, or ``max_seconds`` pass, whichever is first; the
producer's ``stop`` is always called (it closes the cluster streams, so no thread outlives its client
for long). A slow client is never waited for without bound: past ``queue_size`` items the oldest are
dropped and a ``{"dropped": n}`` message says how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

log = logging.getLogger("provider.api.streams")

END = object()  # the producer has nothing more to send
Emit = Callable[[Any], None]
Start = Callable[[Emit], Callable[[], None]]  # starts the producer; returns its stop


class FollowLimits:
    """How many follow streams may be open at once, in all and per account."""

    def __init__(self, total: int, per_account: int) -> None:
        self.total, self.per_account = total, per_account
        self.open = 0
        self.by_account: dict[str, int] = {}

    def acquire(self, account: str) -> str | None:
        """None when a stream may open (the caller must release it), else why not."""
        if self.open >= self.total:
            return f"the provider serves at most {self.total} follow streams at once; retry later"
        if self.by_account.get(account, 0) >= self.per_account:
            return f"at most {self.per_account} follow streams per account at once; close one first"
        self.open += 1
        self.by_account[account] = self.by_account.get(account, 0) + 1
        return None

    def release(self, account: str) -> None:
        self.open -= 1
        left = self.by_account.get(account, 1) - 1
        if left:
            self.by_account[account] = left
        else:
            self.by_account.pop(account, None)


async def pump(ws: WebSocket, start: Start, max_seconds: float, queue_size: int = 1000) -> None:
    loop = asyncio.get_running_loop()
    items: deque[Any] = deque()
    dropped = 0
    ready = asyncio.Event()

    def put(item: Any) -> None:
        nonlocal dropped
        if len(items) >= queue_size and item is not END:
            items.popleft()
            dropped += 1
        items.append(item)
        ready.set()

    def emit(item: Any) -> None:  # called on producer threads
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody listens any more
            loop.call_soon_threadsafe(put, item)

    stop = start(emit)
    receiver = asyncio.ensure_future(ws.receive())
    deadline = loop.time() + max_seconds
    try:
        while True:
            waiter = asyncio.ensure_future(ready.wait())
            done, _ = await asyncio.wait(
                {waiter, receiver}, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            if receiver in done:
                message = receiver.result()
                if message.get("type") == "websocket.disconnect":
                    return
                receiver = asyncio.ensure_future(ws.receive())  # what a client sends is ignored
            if not done:  # the stream's time is up
                await ws.close(1000, "the follow stream reached its time limit; reconnect to go on")
                return
            ready.clear()
            while items:
                item = items.popleft()
                if item is END:
                    await ws.close(1000)
                    return
                if dropped:
                    await ws.send_json({"dropped": dropped})
                    dropped = 0
                await ws.send_json(item)
    except (WebSocketDisconnect, RuntimeError):  # the client went away while we sent
        return
    finally:
        receiver.cancel()
        try:
            stop()
        except Exception:
            log.exception("stopping a follow stream failed")
        if ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(1000)

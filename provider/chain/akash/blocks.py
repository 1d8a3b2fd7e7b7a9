"""The chain's tip, pushed: a CometBFT websocket subscription to new block headers (the only websocket
client of the provider). Wakes whoever waits for a height beyond the one it has seen; when the
websocket is down it reconnects with a backoff, and waiters poll RPC ``status`` meanwhile, so a lost
connection costs latency, never an event (events are read from block results by height).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

import websockets
from websockets.asyncio.client import connect

log = logging.getLogger(__name__)


class BlockWatcher:
    def __init__(self, rpc_url: str, poll: Callable[[], Awaitable[int]]) -> None:
        base = rpc_url.rstrip("/")
        self.url = (
            "wss://" + base.removeprefix("https://")
            if base.startswith("https://")
            else "ws://" + base.removeprefix("http://")
        ) + "/websocket"
        self.poll = poll  # RPC status height, used while the websocket is down
        self.tip = 0
        self.connected = False
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="akash-block-watcher")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def seen(self, height: int) -> None:
        """A height learnt some other way (RPC status): wakes the waiters when it is new."""
        if height > self.tip:
            self.tip = height
            async with self._changed:
                self._changed.notify_all()

    async def _run(self) -> None:
        backoff = 0.5
        query = {"jsonrpc": "2.0", "method": "subscribe", "id": 1, "params": {"query": "tm.event='NewBlockHeader'"}}
        while True:
            try:
                async with connect(self.url, open_timeout=5, ping_interval=10, ping_timeout=10, max_size=2**20) as ws:
                    await ws.send(json.dumps(query))
                    self.connected = True
                    backoff = 0.5
                    log.info("following new blocks url=%s", self.url)
                    async for message in ws:
                        try:
                            header = json.loads(message)["result"]["data"]["value"]["header"]
                            await self.seen(int(header["height"]))
                        except (KeyError, TypeError, ValueError):
                            continue  # the subscription's own acknowledgement, or something we do not follow
            except asyncio.CancelledError:
                raise
            except (OSError, websockets.WebSocketException, TimeoutError) as e:
                if self.connected:
                    log.warning("block websocket lost, reconnecting url=%s error=%r", self.url, str(e)[:200])
            finally:
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def wait_beyond(self, height: int, timeout: float) -> int:
        """The tip once it passes ``height``, or whatever it is after ``timeout`` seconds."""
        self.start()
        deadline = time.monotonic() + timeout
        while self.tip <= height:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not self.connected:
                with contextlib.suppress(Exception):
                    await self.seen(await self.poll())
                if self.tip > height:
                    break
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait(), min(remaining, 0.5 if not self.connected else remaining)
                    )
        return self.tip

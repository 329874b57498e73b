"""An asyncio client beside the threaded one: ``await AsyncPump.open(url)``.

It is the same client, not a second protocol implementation: every command of
``host.client.Pump`` is awaited on a worker thread (``asyncio.to_thread``), where the
threaded client's request lock keeps them one at a time, its retries, state mirror, signing
and error hierarchy unchanged. Events and telemetry arrive as an async iterator fed from the
reader thread (``loop.call_soon_threadsafe``), with the same delivery rules as
``Pump.subscribe()``: every frame after the iterator began, each once, at most
``EVENT_BACKLOG`` kept (the oldest dropped and counted in ``dropped``).

>>> async def main():                                            # doctest: +SKIP
...     async with await AsyncPump.open("socket://127.0.0.1:7001") as pump:
...         await pump.program(rate="10 mL/h", vtbi="1 mL")
...         await pump.start()
...         async for ev in pump.events(timeout=5):
...             print(ev)
"""
from __future__ import annotations

import asyncio
import functools
from typing import Any, AsyncIterator

from host.client import EVENT_BACKLOG, Pump, Unsolicited

# Pump methods awaited as they are (each one request or one atomic group of requests)
COMMANDS = ("hello", "status", "program", "program_steps", "start", "pause", "resume", "stop",
            "ack", "standby", "titrate", "bolus", "silence", "vitals", "heartbeat",
            "configure", "telemetry", "read_log", "reconnect", "request")


class AsyncPump:
    """An asyncio connection to one pump (wraps a ``Pump``; ``.pump`` is the threaded one)."""

    def __init__(self, pump: Pump) -> None:
        self.pump = pump

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> "AsyncPump":
        """``Pump.open(url, **kwargs)`` on a worker thread."""
        return cls(await asyncio.to_thread(Pump.open, url, **kwargs))

    async def close(self) -> None:
        await asyncio.to_thread(self.pump.close)

    async def __aenter__(self) -> "AsyncPump":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def info(self):
        return self.pump.info

    @property
    def state(self):
        return self.pump.state

    def __getattr__(self, name: str) -> Any:
        if name not in COMMANDS:
            raise AttributeError(name)
        method = getattr(self.pump, name)

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)
        return call

    async def events(self, timeout: float | None = None) -> AsyncIterator[Unsolicited]:
        """Frames from now on; ends after ``timeout`` s with none (None: until closed)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=EVENT_BACKLOG)
        self.dropped = getattr(self, "dropped", 0)

        def put(frame: Unsolicited) -> None:           # on the event loop
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(frame)

        def on_frame(frame: Unsolicited) -> None:      # on the reader thread
            loop.call_soon_threadsafe(put, frame)

        self.pump.on_event(on_frame)
        try:
            while not self.pump.closed:
                try:
                    yield await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    return
        finally:
            self.pump.remove_event_callback(on_frame)

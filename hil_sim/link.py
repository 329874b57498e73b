"""The simulated serial line between a host and the pump's UART, and the host-facing endpoints.

This module owns bytes in flight and nothing else:

* `Channel` — one direction of the wire in virtual time (ms). Bytes are paced at the baud
  rate (``bits_per_byte / baud`` each, 10 bits for 8N1): a write at ``t`` that finds the line
  idle delivers its i-th byte (1-based) at ``t + i·byte_ms``; a write while the line is busy
  queues behind it. Optional byte drop and single-bit corruption, seeded.
* `SerialLink` — the two channels (``to_pump``, ``to_host``), one `random.Random` each.
* Endpoints, where a real host program connects (all non-blocking, all with the same small
  interface `Endpoint`): `PtyEndpoint` (a pseudo-terminal; ``url`` is the ``/dev/pts/N``
  slave path), `TcpEndpoint` (``socket://127.0.0.1:PORT``, one client at a time) — both
  live in `host.endpoints`, because `infusekit ne1000` serves them in front of a real pump
  too — and `MemoryEndpoint` (in-process, for tests and embedding).

The wall-clock side (when to read an endpoint, when to write to it) belongs to `serve`.
"""
from __future__ import annotations

import math
import random
import threading
from collections import deque
from typing import Protocol

from host.endpoints import PtyEndpoint, TcpEndpoint

__all__ = ["Channel", "SerialLink", "Endpoint", "PtyEndpoint", "TcpEndpoint", "MemoryEndpoint"]

_EPS = 1e-6  # ms: tolerance when comparing arrival times


class Channel:
    """One direction of the serial line, in virtual time (ms)."""

    def __init__(self, baud: int = 115200, bits_per_byte: int = 10, drop_p: float = 0.0,
                 corrupt_p: float = 0.0, rng: random.Random | None = None) -> None:
        self.baud = baud
        self.bits_per_byte = bits_per_byte
        self.byte_ms = bits_per_byte * 1000.0 / baud
        self.drop_p = drop_p
        self.corrupt_p = corrupt_p
        self._rng = rng or random.Random(0)
        self._q: deque[list] = deque()     # [arrival of first byte (ms), bytes]
        self._free_ms = -math.inf          # when the line has finished the last byte queued
        self.delay_ms = 0.0                # extra latency of every byte (adapter, bridge)
        self.bytes_sent = 0
        self.bytes_dropped = 0
        self.bytes_corrupted = 0

    # -- writing
    def send(self, data: bytes, t_ms: float) -> None:
        """Start transmitting ``data`` at ``t_ms`` (or when the line is free)."""
        if not data:
            return
        bt = self.byte_ms
        start = self._free_ms if self._free_ms > t_ms else t_ms
        self._free_ms = start + len(data) * bt
        self.bytes_sent += len(data)
        lat = self.delay_ms
        if not (self.drop_p or self.corrupt_p):
            self._q.append([start + bt + lat, bytes(data)])
            return
        rng = self._rng
        run = bytearray()
        first = 0.0
        for i, b in enumerate(data):
            if self.drop_p and rng.random() < self.drop_p:
                self.bytes_dropped += 1
                if run:
                    self._q.append([first, bytes(run)])
                    run = bytearray()
                continue
            if self.corrupt_p and rng.random() < self.corrupt_p:
                b ^= 1 << rng.randrange(8)
                self.bytes_corrupted += 1
            if not run:
                first = start + (i + 1) * bt + lat
            run.append(b)
        if run:
            self._q.append([first, bytes(run)])

    # -- reading
    def recv(self, t_ms: float) -> bytes:
        """All bytes that have fully arrived by ``t_ms``."""
        q = self._q
        if not q or q[0][0] > t_ms + _EPS:
            return b""
        out = bytearray()
        bt = self.byte_ms
        while q:
            first, data = q[0]
            if first > t_ms + _EPS:
                break
            n = int((t_ms + _EPS - first) / bt) + 1
            if n >= len(data):
                out += data
                q.popleft()
            else:
                out += data[:n]
                q[0] = [first + n * bt, data[n:]]
                break
        return bytes(out)

    def schedule(self, t0_ms: float, step_ms: float, n: int) -> list[tuple[int, bytes]]:
        """Take the bytes that arrive by the last of n calls at t0, t0+step, …, grouped by the
        index of the first call at or after their arrival: ``[(k, bytes), …]``."""
        q = self._q
        t_last = t0_ms + (n - 1) * step_ms
        if not q or q[0][0] > t_last + _EPS:
            return []
        bt = self.byte_ms
        out: list[tuple[int, bytes]] = []
        while q:
            first, data = q[0]
            if first > t_last + _EPS:
                break
            i = 0
            ln = len(data)
            while i < ln:
                arr = first + i * bt
                if arr > t_last + _EPS:
                    break
                k = math.ceil((arr - t0_ms) / step_ms - 1e-9)
                if k < 0:
                    k = 0
                t_k = t0_ms + k * step_ms
                j = min(ln, int((t_k + _EPS - first) / bt) + 1)
                if out and out[-1][0] == k:
                    out[-1] = (k, out[-1][1] + data[i:j])
                else:
                    out.append((k, data[i:j]))
                i = j
            if i >= ln:
                q.popleft()
            else:
                q[0] = [first + i * bt, data[i:]]
                break
        return out

    # -- queries
    @property
    def pending(self) -> int:
        return sum(len(d) for _, d in self._q)

    def next_arrival(self) -> float | None:
        """Arrival time of the next byte, or None."""
        return self._q[0][0] if self._q else None

    def head_done(self) -> float | None:
        """Arrival time of the last byte of the oldest write still in flight, or None."""
        if not self._q:
            return None
        first, data = self._q[0]
        return first + (len(data) - 1) * self.byte_ms

    def clear(self) -> None:
        self._q.clear()


class SerialLink:
    """Both directions of the pump's serial line."""

    def __init__(self, baud: int = 115200, bits_per_byte: int = 10, drop_p: float = 0.0,
                 corrupt_p: float = 0.0, seed: int = 0) -> None:
        self.baud = baud
        self.to_pump = Channel(baud, bits_per_byte, drop_p, corrupt_p,
                               random.Random(f"{seed}:link:to_pump"))
        self.to_host = Channel(baud, bits_per_byte, drop_p, corrupt_p,
                               random.Random(f"{seed}:link:to_host"))

    def set_noise(self, drop_p: float | None = None, corrupt_p: float | None = None,
                  delay_ms: float | None = None) -> None:
        """Per-byte drop and bit-flip probabilities, and a fixed extra latency (ms) per byte
        in each direction (bytes keep their order)."""
        for ch in (self.to_pump, self.to_host):
            if drop_p is not None:
                ch.drop_p = drop_p
            if corrupt_p is not None:
                ch.corrupt_p = corrupt_p
            if delay_ms is not None:
                if delay_ms < 0:
                    raise ValueError("delay_ms must be >= 0")
                ch.delay_ms = float(delay_ms)

    def wire_ms(self, nbytes: int) -> float:
        return nbytes * self.to_pump.byte_ms


# ---------------------------------------------------------------------------- endpoints
class Endpoint(Protocol):
    """Where a host connects. Every method is non-blocking except `wait`."""

    url: str

    def read(self) -> bytes: ...            # host → pump bytes available now (b"" if none)
    def write(self, data: bytes) -> None: ...   # pump → host (buffered; dropped if nobody listens)
    def wait(self, timeout: float) -> bool: ...  # until host bytes may be readable, or timeout
    def close(self) -> None: ...


class MemoryEndpoint:
    """An in-process endpoint: the host side calls `host_write` / `host_read`."""

    url = "memory://"

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._in = bytearray()    # host → pump
        self._out = bytearray()   # pump → host

    # simulator side
    def read(self) -> bytes:
        with self._cv:
            data = bytes(self._in)
            self._in.clear()
            return data

    def write(self, data: bytes) -> None:
        with self._cv:
            self._out += data
            self._cv.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: bool(self._in), max(0.0, timeout))

    def close(self) -> None:
        pass

    # host side
    def host_write(self, data: bytes) -> None:
        with self._cv:
            self._in += data
            self._cv.notify_all()

    def host_read(self, timeout: float = 0.0) -> bytes:
        with self._cv:
            self._cv.wait_for(lambda: bool(self._out), max(0.0, timeout))
            data = bytes(self._out)
            self._out.clear()
            return data

"""Serial endpoints a host program connects to: a pseudo-terminal or a TCP listener.

Both are non-blocking, with the small interface ``url``, ``read()``, ``write(data)``,
``wait(timeout)``, ``close()``: the simulator serves the simulated pump on them
(`hil_sim.serve`, ``sim serve``) and `infusekit ne1000` serves the NE-1000 personality on
them, so both print the same kind of URL (``/dev/pts/N`` or ``socket://127.0.0.1:PORT``).
"""
from __future__ import annotations

import errno
import os
import select
import socket
import tty


class PtyEndpoint:
    """A pseudo-terminal: the host opens ``url`` (the slave, e.g. /dev/pts/3) with pyserial.

    The slave side is put in raw mode and kept open here, so its settings survive the host
    opening and closing it. Output that nobody reads overruns like a UART with no listener:
    when the pty buffer is full the newest bytes are lost (``overruns`` counts it).
    """

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.url = os.ttyname(self._slave)
        self._out = bytearray()
        self.overruns = 0

    def fileno(self) -> int:
        return self._master

    def read(self) -> bytes:
        self._flush()
        try:
            return os.read(self._master, 65536)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise

    def write(self, data: bytes) -> None:
        self._out += data
        self._flush()

    def _flush(self) -> None:
        # A full pty buffer is a receiver overrun: like a UART whose FIFO is full, the new
        # bytes are lost and the bytes already waiting stay. (Flushing the slave's queue
        # instead would race a reader between its select() and read(): pyserial then sees
        # "ready but no data" and takes the port for disconnected.)
        while self._out:
            try:
                n = os.write(self._master, self._out)
            except BlockingIOError:
                del self._out[:]
                self.overruns += 1
                return
            del self._out[:n]

    def wait(self, timeout: float) -> bool:
        r, _, _ = select.select([self._master], [], [], max(0.0, timeout))
        return bool(r)

    def drained(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until the pty can take more bytes (the host has read what
        was waiting); False when it still cannot. Lets a simulation go no faster than its
        host reads (`hil_sim.serve`, lock-step)."""
        _, w, _ = select.select([], [self._master], [], max(0.0, timeout))
        return bool(w)

    def close(self) -> None:
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> PtyEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TcpEndpoint:
    """A TCP listener on 127.0.0.1 (``url`` = socket://127.0.0.1:PORT, pyserial's socket
    transport). One client at a time: a second connection is closed at once; output while
    no client is connected is dropped."""

    MAX_BUFFER = 1 << 16

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, port))
        ls.listen(4)
        ls.setblocking(False)
        self._ls = ls
        self.port = ls.getsockname()[1]
        self.url = f"socket://{host}:{self.port}"
        self._conn: socket.socket | None = None
        self._out = bytearray()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def _drop_client(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
        self._conn = None
        self._out.clear()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self._ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            if self._conn is None:
                c.setblocking(False)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._conn = c
            else:
                c.close()

    def read(self) -> bytes:
        data = b""
        if self._conn is not None:
            try:
                data = self._conn.recv(65536)
                if not data:
                    self._drop_client()
            except BlockingIOError:
                data = b""
            except OSError:
                self._drop_client()
                data = b""
        self._accept()
        self._flush()
        return data

    def write(self, data: bytes) -> None:
        if self._conn is None:
            return
        self._out += data
        if len(self._out) > self.MAX_BUFFER:
            del self._out[: len(self._out) - self.MAX_BUFFER]
        self._flush()

    def _flush(self) -> None:
        while self._out and self._conn is not None:
            try:
                n = self._conn.send(self._out)
            except BlockingIOError:
                return
            except OSError:
                self._drop_client()
                return
            del self._out[:n]

    def wait(self, timeout: float) -> bool:
        fds: list = [self._ls] if self._conn is None else [self._ls, self._conn]
        r, _, _ = select.select(fds, [], [], max(0.0, timeout))
        return bool(r)

    def drained(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until the output buffered for the client has gone out
        (True at once without a client); False when some is still waiting."""
        self._flush()
        if not self._out or self._conn is None:
            return True
        _, w, _ = select.select([], [self._conn], [], max(0.0, timeout))
        self._flush()
        return not self._out

    def close(self) -> None:
        self._drop_client()
        self._ls.close()

    def __enter__(self) -> TcpEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

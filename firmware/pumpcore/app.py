"""The imperative shell shared by every board: read the board, step the controller, drive it.

`App.tick()` is one pass of the main loop. The real board's `main.py`, the simulated board
under the `micropython` interpreter and the in-process CPython simulator all call exactly
this, so the simulated board cannot drift from the real one.

A board provides: `ticks_ms()`, `read_inputs(inp)`, `uart_read(buf) -> n`,
`uart_write(buf, n)`, `drive(out)` (steps, enable, alarm signal), `feed_watchdog()`,
`wait_next(deadline_ms)`, and the attributes `NL_PER_KSTEP`, `DEVICE_ID`, `LIB_PATH`.
"""
from pumpcore.controller import Controller, Config, Inputs, TICK_MS, ticks_add, ticks_diff
from pumpcore.druglib import DrugLibrary

_RX_CHUNK = 256


class App:
    def __init__(self, board):
        self.board = board
        cfg = Config(board.NL_PER_KSTEP, device_id=board.DEVICE_ID)
        self.ctl = Controller(cfg, DrugLibrary.load(board.LIB_PATH))
        self.inp = Inputs()
        self.rx = bytearray(_RX_CHUNK)

    def tick(self):
        b = self.board
        now = b.ticks_ms()
        b.read_inputs(self.inp)
        n = b.uart_read(self.rx)
        out = self.ctl.step(now, self.inp, self.rx, n)
        b.drive(out)
        if out.tx.n:
            b.uart_write(out.tx.buf, out.tx.n)
        b.feed_watchdog()
        return out


def run(board):
    """Main loop for a real board: a control tick every TICK_MS, bytes served as they come."""
    app = App(board)
    deadline = board.ticks_ms()
    while True:
        app.tick()
        if ticks_diff(board.ticks_ms(), deadline) >= 0:
            deadline = ticks_add(deadline, TICK_MS)
        board.wait_next(deadline)

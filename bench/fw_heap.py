"""MicroPython-side heap check: boot the firmware app on the sim board and run one full
ketamine infusion (40 min virtual, the encoder following the motor so that the closed loop
runs to COMPLETE), then print a JSON line. bench/bench_fw.py compiles this
file with mpy-cross into the firmware tree (so no compiler garbage counts), runs it with
`-X heapsize=N` and bisects N: the smallest heap in which boot + a full infusion completes is
the figure. With `main(DIR)` the event log is kept in DIR (a host
folder standing in for the Pico's littlefs: the flash itself is not RAM).

bench/bench_fw.py runs this module two ways: from a tree of `.mpy` files (code loaded into the
heap, as from the Pico's littlefs), and from a ROMFS image mounted at /rom (as the Pico's
MicroPython mounts its ROMFS flash partition at boot; see bench_fw.ROM_BOOT), where bytecode
and constant data are used in place, not copied into the heap.

Also reported: `live_bytes` (heap in use after boot with garbage collected) and the state
the infusion ended in."""
import gc
import json
import sys

sys.path.insert(0, ".")
gc.collect()
base = gc.mem_alloc()


def main(log_dir=None):
    from boards.sim import Board
    from pumpcore.app import App
    from pumpcore import fsm
    from pumpcore import protocol as P
    from pumpcore.ticks import TICK_MS
    store = None
    if log_dir:
        from pumpcore.store import FileStore
        store = FileStore(log_dir)
    board = Board("druglib.json", store)
    app = App(board)
    gc.collect()
    live = gc.mem_alloc() - base
    t = 0x3FFFFFFF - 60000
    bt = b"%d" % app.ctl.boot               # guarded commands name this boot (protocol v1)
    cmds = (b"1 PROG boot=" + bt + b" drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000",
            b"2 TLM period_ms=1000", b"3 START boot=" + bt)
    for body in cmds:
        c = P.crc16(body, 0, len(body))
        board._rx = body + b"*%04X\n" % c
        board._rx_pos = 0
        board.now = t
        board.tx.clear()
        app.tick()
    board.press = 20
    n = 0
    while n < 50000:
        t = (t + TICK_MS) & 0x3FFFFFFF
        board.now = t
        board.tx.clear()
        app.tick()
        board.enc += board.steps        # the plunger follows the motor (closed loop)
        n += 1
        board.press = 20 + (n & 1)      # a live sensor: one count of noise (a frozen one faults)
        if app.ctl.fsm.state != fsm.RUNNING:
            break
    print(json.dumps({"live_bytes": live, "ticks": n, "state": fsm.STATE_NAMES[app.ctl.fsm.state].decode(),
                      "delivered_nl": app.ctl.line.delivered_nl}))

"""MicroPython-side heap check: boot the firmware app on the sim board and run one full
ketamine infusion (40 min virtual), then print a JSON line. bench/run.py runs this with
`-X heapsize=N` and bisects N: the smallest heap in which boot + a full infusion completes
is `fw.heap_peak_bytes`. The live heap after a collection is reported too."""
import gc
import json
import sys

sys.path.insert(0, ".")
gc.collect()
base = gc.mem_alloc()
peak = 0


def sample():
    global peak
    u = gc.mem_alloc() - base
    if u > peak:
        peak = u


from boards.sim import Board  # noqa: E402
from pumpcore.app import App  # noqa: E402
from pumpcore.controller import TICK_MS  # noqa: E402
from pumpcore import protocol as P  # noqa: E402

sample()
board = Board("druglib.json")
app = App(board)
sample()
t = 0x3FFFFFFF - 60000
cmds = [b"1 PROG drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000", b"2 TLM period_ms=1000", b"3 START"]
for body in cmds:
    c = P.crc16(body, 0, len(body))
    board._rx = body + b"*%04X\n" % c
    board._rx_pos = 0
    board.now = t
    board.tx = []
    app.tick()
    sample()
n = 0
while n < 50000:
    t = (t + TICK_MS) & 0x3FFFFFFF
    board.now = t
    board.tx = []
    app.tick()
    n += 1
    if n % 20 == 0:
        sample()
    if app.ctl.fsm.state != 2:
        break
gc.collect()
sample()
print(json.dumps({"heap_peak_bytes": peak, "ticks": n, "state": app.ctl.fsm.state,
                  "delivered_nl": app.ctl.line.delivered_nl}))

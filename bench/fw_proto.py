"""MicroPython-side protocol benchmark (issue 11): what a refused signed frame and a `LOG`
request cost on the pump. Run by bench/bench_proto.py under the `micropython` interpreter
with cwd = a compiled firmware tree. Prints one JSON object.

* MAC refusal: a signed ACK (allowed in every state) with a wrong MAC, through Controller.step: heap bytes
  allocated (gc.mem_alloc, collector off) and µs per frame (median).
* LOG: the simulated board with a full event log (4 segments of 256 records, the default
  retention), `LOG from=S max=32` for S at the start, in the middle, at a segment boundary
  and at the end: the worst µs of the one tick that answers it (the tick that reads the
  frame, pages the log and writes the reply; the median of 7, each after a collection),
  and the same with the whole-chain read the pump used before (EventLog.records). The log
  is on files (FileStore), as on the board's littlefs.""" 
import gc
import json
import sys
import time

sys.path.insert(0, ".")
from pumpcore.controller import Controller, Config, Inputs  # noqa: E402
from pumpcore.druglib import DrugLibrary  # noqa: E402
from pumpcore.auth import Auth  # noqa: E402
from pumpcore.settings import Settings  # noqa: E402
from pumpcore import protocol as P  # noqa: E402

_KEY = b"0123456789abcdef0123456789abcdef"


def crc_frame(body):
    c = P.crc16(body, 0, len(body))
    return body + b"*%04X\n" % c


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def mac_refusal():
    s = Settings()
    s.auth = 1
    ctl = Controller(Config(217078), DrugLibrary.load("druglib.json"), s, None, Auth(_KEY, 5))
    inp = Inputs()
    inp.pressure_mmhg = 20
    t = 1000
    ctl.step(t, inp, b"", 0)
    # distinct ids: a repeated frame would be answered from the retry cache, unverified
    frames = [bytearray(crc_frame(b"%d ACK boot=%d ctr=6 mac=0123456789ABCDEF" % (i + 1, ctl.boot)))
              for i in range(60)]
    for fb in frames[:3]:
        t += 1
        ctl.step(t, inp, fb, len(fb))
    gc.collect()
    gc.disable()
    alloc = 0                        # the most any one refused frame allocated
    for i in range(3, 23):
        fb = frames[i]
        t += 1
        m0 = gc.mem_alloc()
        ctl.step(t, inp, fb, len(fb))
        d = gc.mem_alloc() - m0
        if d > alloc:
            alloc = d
    gc.enable()
    last = bytes(ctl.out.tx.buf[:ctl.out.tx.n])
    assert b"ER AUTH wrong MAC" in last, last
    us = []
    for fb in frames[23:54]:
        t += 1
        a = time.ticks_us()
        ctl.step(t, inp, fb, len(fb))
        us.append(time.ticks_diff(time.ticks_us(), a))
    return alloc, _median(us)


def log_requests():
    from boards import sim
    from pumpcore.eventlog import EventLog, SEG_RECORDS, KEEP_SEGS
    import os
    from pumpcore.store import FileStore
    try:
        os.mkdir("logbench")              # the board's flash: files, as littlefs holds them
    except OSError:
        pass
    st = FileStore("logbench")
    log = EventLog(st, None)
    log.scan()
    n = SEG_RECORDS * KEEP_SEGS
    for i in range(n):
        log.add(1000 + i, b"CMD", b"%d PROG rate_ul_h=52500 vtbi_nl=35000000" % (i % 60000 + 1))
        if i % 16 == 15:
            log.commit()
    log.commit()
    h = sim.Harness("druglib.json", st)
    t = 5000
    h.slice(t, 50, 1, 20, 0, 0, 4000, [])
    log = h.app.log
    first = log.records(0, 1)[0].seq
    last = log.seq
    starts = (0, first + n // 2, first + SEG_RECORDS - 5, last - 10, last)
    calls = [0]
    real = log._hash

    def counted(prev, body, *pad):
        calls[0] += 1
        return real(prev, body, *pad)
    log._hash = counted
    hashes = 0
    worst = 0
    rid = 10
    for s in starts:
        per = []
        for _ in range(7):
            rid += 1
            t += 50
            f = crc_frame(b"%d LOG from=%d max=32" % (rid, s))
            gc.collect()                  # a collection inside is the request's own
            c0 = calls[0]
            a = time.ticks_us()
            h.slice(t, 50, 1, 20 + (rid & 1), 0, 0, 4000, [(0, f)])
            per.append(time.ticks_diff(time.ticks_us(), a))
            if calls[0] - c0 > hashes:
                hashes = calls[0] - c0
        if _median(per) > worst:
            worst = _median(per)
    full = 0
    full_hashes = 0
    for s in starts:
        per = []
        for _ in range(3):
            gc.collect()
            c0 = calls[0]
            a = time.ticks_us()
            log.records(s, 32)
            per.append(time.ticks_diff(time.ticks_us(), a))
            if calls[0] - c0 > full_hashes:
                full_hashes = calls[0] - c0
        if _median(per) > full:
            full = _median(per)
    idle = []
    for _ in range(21):
        t += 50
        a = time.ticks_us()
        h.slice(t, 50, 1, 20, 0, 0, 4000, [])
        idle.append(time.ticks_diff(time.ticks_us(), a))
    return worst, full, _median(idle), len(log.records(0)), hashes, full_hashes


def main():
    alloc, us = mac_refusal()
    worst, full, idle, nrec, hashes, full_hashes = log_requests()
    print(json.dumps({"mac_refusal_alloc_bytes": alloc, "mac_refusal_us": us,
                      "log_request_us": worst, "log_full_scan_us": full,
                      "log_request_hashes": hashes, "log_full_scan_hashes": full_hashes,
                      "board_tick_us": idle, "log_records": nrec}))


main()

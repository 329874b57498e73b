"""Log retention on the Pico's littlefs (issue 10): replay a clinic day's records (written by
tests/fw/clinic.py on the simulated board) DAYS times into the event log, as the app writes
them (one commit per tick), on a simulated flash the size of the RPI_PICO filesystem
(1408 KB, 4 KB blocks) that also holds the firmware tree as `mpremote cp` puts it there.
Portable; under CPython the store is a MemStore with the same byte budget.

usage (cwd = firmware/):  micropython ../tests/fw/retention.py DAYFILE DAYS [pico|mem]
DAYFILE: one record a line, `t_ms EV data` (the day as clinic.py logged it).
prints one JSON line: {"days", "days_kept", "records", "kept", "bytes_kept", "segments",
"dropped_full", "free_blocks", "fw_bytes", "ok", "first_day_auth"}.
"""
import sys

if "." not in sys.path:
    sys.path.insert(0, ".")
import os

from pumpcore.eventlog import EventLog, LOG_BYTES

PICO_BLOCKS = 1408 * 1024 // 4096


def _copy_tree(src, dst):
    """Copy the firmware tree (sources, library) onto the flash; returns bytes copied."""
    n = 0
    try:
        os.mkdir(dst)
    except OSError:
        pass
    for name in os.listdir(src):
        if name.startswith(".") or name == "__pycache__":
            continue
        p = src + "/" + name
        q = dst + "/" + name
        mode = os.stat(p)[0]
        if mode & 0x4000:
            n += _copy_tree(p, q)
        else:
            with open(p, "rb") as f:
                data = f.read()
            with open(q, "wb") as g:
                g.write(data)
            n += len(data)
    return n


def _store(kind):
    if kind == "pico":
        from boards import sim
        flash = sim.Flash(nblocks=PICO_BLOCKS)
        st = sim.mount_flash(flash)
        fw = _copy_tree(".", sim.MOUNT + "/fw")
        for f in ("settings.txt", "ctr.txt", "key.bin"):
            with open(sim.MOUNT + "/" + f, "wb") as g:
                g.write(b"x" * 64)
        return st, fw
    from pumpcore.memstore import MemStore

    class Budget(MemStore):
        """A MemStore that refuses appends beyond the Pico's filesystem size."""

        def append(self, name, data):
            used = 0
            for f in self.files.values():
                used += len(f)
            if used + len(data) > PICO_BLOCKS * 4096:
                raise OSError(28, "no space")
            MemStore.append(self, name, data)
    return Budget(), 0


def load_day(path):
    day = []
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            p = line.split(b" ", 2)
            if len(p) < 2:
                continue
            day.append((int(p[0]), p[1], p[2] if len(p) > 2 else b""))
    return day


def run(dayfile, days, kind="pico"):
    day = load_day(dayfile)
    st, fw = _store(kind)
    log = EventLog(st, b"retention-key-0123456789abcdef01")
    log.scan()
    t = 0
    for d in range(days):
        last_t = None
        for rt, ev, data in day:
            if ev == b"BOOT":
                data = b"n=%d fw=0.1.0 reset=power" % (d + 1)
                if log._pending:
                    log.commit()
                # a reboot: the log is mounted afresh (it appends to its last segment)
                log = EventLog(st, b"retention-key-0123456789abcdef01")
                log.scan()
            if last_t is not None and rt != last_t and log._pending:
                log.commit()
            last_t = rt
            log.add((t + rt) & 0x3FFFFFFF, ev, data)
        log.commit()
        t += 86400000
    recs = log.records()
    boots = [r.ifield(b"n") for r in recs if r.ev == b"BOOT"]
    auth = [r.seq for r in recs if r.ev == b"RSP" and b" ER AUTH" in r.data]
    kept = 0
    for n in log.segments():
        kept += log.sizes.get(n, 0)
    free = -1
    if kind == "pico":
        from boards import sim
        free = os.statvfs(sim.MOUNT)[3]
    _, v, _ = (None, None, None)
    log2 = EventLog(st, b"retention-key-0123456789abcdef01")
    v = log2.scan()
    return {"days": days, "days_kept": len(boots), "first_boot": boots[0] if boots else 0,
            "records": log.seq, "kept": len(recs), "bytes_kept": kept, "budget": LOG_BYTES,
            "segments": len(log.segments()), "dropped_full": log.dropped_full,
            "free_blocks": free, "fw_bytes": fw, "ok": v.ok, "auth_records": len(auth),
            "kind": kind}


def main(argv):
    import json
    print(json.dumps(run(argv[1], int(argv[2]), argv[3] if len(argv) > 3 else "pico")))


if __name__ == "__main__":
    main(sys.argv)

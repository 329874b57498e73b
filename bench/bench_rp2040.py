"""Benchmarks of the firmware image on the emulated RP2040 (hil_sim/rp2040.py, issue 13).

* ``fw.heap_peak_bytes``: the least free heap (bytes, at the start of main.py, after the
  frozen image's own boot) in which the image boots and runs a 0.5 mL infusion to COMPLETE
  with the event log on. A bench-only main.py allocates a pad that leaves exactly that much
  free, then runs the app as firmware/main.py does; a bisection over 512-byte steps finds
  a size that passes (a MemoryError anywhere, or no COMPLETE in the allowed time, fails),
  then a 128-byte grid finds the least size from which every size up to 1 KB above passes
  (the trial is not monotonic in the heap size: `heap_peak`).
  Every trial is bounded: 10 s of emulated time to boot and 40 s to complete, at most
  `TRIAL_REPLY_S` wall seconds for any one answer of the emulator and `TRIAL_WALL_S` for the
  whole trial; a trial that hangs, or whose emulator dies, fails with that as its reason
  (it never ends the bench).
* ``fw.tick_p99_us_rp2040`` / ``fw.tick_max_us_rp2040`` / ``fw.tick_p50_us_rp2040``: App.tick
  durations in emulated time (the bench main.py raises GP25 around each call; the harness
  times the pin), over a steady 52.5 mL/h infusion with telemetry every 200 ms and the event
  log on; flash program/erase inside a tick count, with their datasheet time.
* ``fw.step_gap_max_ms_rp2040``: the longest pause between STEP pulses over the same run.
  The run is 3 minutes long so that it holds at least one littlefs metadata compaction (a
  4 KB erase) of the heartbeat's directory, which comes every ~15 heartbeats (150 s).
* ``sim.speed_rp2040_x``: simulated seconds per wall second over that run (boot excluded).
* ``fw.flash_erases_per_min_rp2040``: 4 KB sector erases per minute of that run.
"""
from __future__ import annotations

import os
import re
import time

from hil_sim.cosim import Simulation
from host.codec import encode_request

TRIAL_REPLY_S = 60.0        # wall seconds the emulator may take for one slice of a heap trial
TRIAL_WALL_S = 600.0        # wall seconds for a whole heap trial (boot + 15 s infusion)

MAIN = b"""
import gc
from machine import Pin
FREE = %d
gc.collect()
pad = bytearray(gc.mem_free() - FREE) if FREE else None
gc.collect()
free0 = gc.mem_free()
probe = Pin(25, Pin.OUT, value=0)
try:
    from boards import rp2_pico
    from pumpcore.app import App
    board = rp2_pico.Board()
    app = App(board)
    while True:
        probe.value(1)
        app.tick()
        probe.value(0)
        board.wait_next(app.ctl.wake_at())
except BaseException as e:
    pad = app = board = None
    gc.collect()
    import io, sys
    s = io.StringIO()
    sys.print_exception(e, s)
    with open("err.txt", "w") as f:
        f.write("free %%d\\n" %% free0)
        f.write(s.getvalue())
    import time
    while True:
        time.sleep(1)
"""


class _Host:
    """A minimal host on the simulation's wire: numbered requests, replies by id."""

    def __init__(self, sim: Simulation, deadline: float | None = None) -> None:
        self.sim = sim
        self.deadline = deadline            # time.monotonic() past which requests raise
        self.rid = 0
        self.buf = b""
        self.boot: int | None = None    # HELLO's boot number (protocol v1's reboot guard)

    def request(self, word: str, fields: dict | None = None, wait_ms: int = 3000) -> str | None:
        self.rid += 1
        rid = self.rid
        fields = dict(fields or {})
        if word in ("PROG", "START") and self.boot is not None:
            fields = {"boot": self.boot, **fields}
        self.sim.host_send(encode_request(rid, word, fields))
        t_end = self.sim.t_ms + wait_ms
        while self.sim.t_ms < t_end:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise _TrialTimeout("trial over its wall-time bound")
            self.sim.slice(1)
            self.buf += self.sim.host_recv()
            for line in self.buf.split(b"\n"):
                if line.startswith(b"%d " % rid):
                    self.buf = b""
                    return line.decode(errors="replace")
        return None

    def state(self) -> str | None:
        r = self.request("STATUS")
        m = re.search(r"state=(\w+)", r or "")
        return m.group(1) if m else None


def _sim(free: int, image, timeout_s: float = 300.0) -> Simulation:
    from hil_sim.rp2040 import RP2040Runtime
    rt = RP2040Runtime(image=image, main=MAIN % free, timeout_s=timeout_s)
    return Simulation(runtime=rt, seed=5)


def _boot(sim: Simulation, host: _Host, max_ms: int = 10_000) -> bool:
    t_end = sim.t_ms + max_ms
    while sim.t_ms < t_end:
        sim.run_for(500)
        if host.state() is not None:
            m = re.search(r" boot=(\d+)", host.request("HELLO") or "")
            host.boot = int(m.group(1)) if m else None
            return True
    return False


class _TrialTimeout(Exception):
    pass


def heap_trial(free: int, image, wall_s: float = TRIAL_WALL_S,
               reply_s: float = TRIAL_REPLY_S) -> tuple[bool, str]:
    """Boot with ``free`` bytes of heap and infuse 0.5 mL at 120 mL/h (15 s) to COMPLETE.
    Never raises: a hang (no answer within ``reply_s``, or the trial past ``wall_s``) or a
    dead emulator is a failure, with what happened as its reason."""
    deadline = time.monotonic() + wall_s
    sim = None
    why = "emulator did not start"
    try:
        sim = _sim(free, image, timeout_s=reply_s)
        run_for = sim.run_for

        def bounded(ms: int) -> None:       # the trial's wall bound, checked between slices
            if time.monotonic() > deadline:
                raise _TrialTimeout(f"trial over {wall_s:.0f} s of wall time")
            run_for(ms)
        sim.run_for = bounded               # type: ignore[method-assign]
        host = _Host(sim, deadline)
        why = "no answer after boot"
        if _boot(sim, host):
            st = host.state()
            why = f"booted into {st}"
            if st == "IDLE" and host.request("PROG", {"rate_ul_h": 120000, "vtbi_nl": 500000}) \
                    and (host.request("START") or "").find("RUNNING") >= 0:
                t_end = sim.t_ms + 40_000
                while sim.t_ms < t_end:
                    sim.run_for(1000)
                    st = host.state()
                    if st != "RUNNING":
                        break
                why = f"ended in {st}"
                if st == "COMPLETE":
                    return True, "COMPLETE"
        try:
            why += "; " + sim.runtime.read_file("err.txt").decode(errors="replace").strip()  # type: ignore[attr-defined]
        except Exception:
            pass
        return False, why
    except Exception as e:                  # a hang or a dead emulator: this trial fails
        text = str(e).splitlines()[0] if str(e) else ""
        return False, f"{why}; then {type(e).__name__}: {text}"
    finally:
        if sim is not None:
            try:
                sim.close()
            except Exception:
                pass


def heap_peak(image, lo: int = 20480, hi: int = 40960, step: int = 512, fine: int = 128,
              span: int = 1024) -> tuple[int | None, dict]:
    """The least free heap F such that the trial passes at every size F, F + fine, ...,
    F + span: a bisection over `step` finds a passing size, then the `fine` grid around it is
    walked. The trial is not monotonic in the heap size (a larger heap moves where the boot
    log's allocations land: on 2026-12-03 main's image passed at 28,160, 28,288 and 28,544
    B and failed at 28,416), so one passing size is not a figure a board can rely on."""
    trials: dict[int, str] = {}
    oks: dict[int, bool] = {}

    def run(free: int) -> bool:
        if free not in oks:
            ok, why = heap_trial(free, image)
            oks[free], trials[free] = ok, why
            print(f"   heap {free:6d} B free: {'pass' if ok else 'FAIL ' + why.splitlines()[-1][:100]}",
                  flush=True)
        return oks[free]

    if not run(hi):             # not even the top of the range: no figure (the bench goes on)
        return None, trials
    top = hi
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if run(mid):
            hi = mid
        else:
            lo = mid
    f = hi
    while f - fine > lo and run(f - fine):      # the grid below the bisection's answer
        f -= fine
    s = f + fine
    while s <= f + span and s <= top:           # ... and every size above it
        if run(s):
            s += fine
        else:
            f = s = s + fine                    # the figure starts above the failure
    return f, trials


def _cpu_s(rt) -> float:
    """CPU seconds (user + system) the runtime's Node process has used so far."""
    try:
        f = open(f"/proc/{rt._proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, AttributeError, IndexError, ValueError):
        return 0.0


def steady(image, minutes: float = 3.0) -> dict:
    """A steady 52.5 mL/h infusion (the ketamine job's rate) with telemetry and the log."""
    sim = _sim(0, image)
    host = _Host(sim)
    try:
        if not _boot(sim, host):
            raise RuntimeError("the image did not boot")
        host.request("TLM", {"period_ms": 200})
        host.request("PROG", {"rate_ul_h": 52500, "vtbi_nl": 35_000_000})
        host.request("START")
        sim.run_for(20_000)                 # past the slack take-up: steady flow
        rt = sim.runtime
        rt.metrics(reset=True)              # type: ignore[attr-defined]
        t_sim, w = sim.t_ms, time.perf_counter()
        c0 = _cpu_s(rt) + time.process_time()
        n = int(minutes * 60_000) // 1000
        for _ in range(n):
            sim.run_for(1000)
            host.buf = b""
            sim.host_recv()
        wall = time.perf_counter() - w
        cpu = _cpu_s(rt) + time.process_time() - c0
        m = rt.metrics()                    # type: ignore[attr-defined]
        sim_s = (sim.t_ms - t_sim) / 1000
        st = host.state()
        assert st == "RUNNING", f"steady run ended in {st}"
        return {
            "fw.tick_p50_us_rp2040": m["tick_p50_us"],
            "fw.tick_p99_us_rp2040": m["tick_p99_us"],
            "fw.tick_max_us_rp2040": m["tick_max_us"],
            "fw.step_gap_max_ms_rp2040": round(m["gap_max_us"] / 1000, 1),
            "fw.flash_erases_per_min_rp2040": round(m["erases"] * 60 / sim_s, 2),
            "fw.flash_stall_ms_per_min_rp2040": round(m["stall_us"] / 1000 * 60 / sim_s, 1),
            "sim.speed_rp2040_x": round(sim_s / wall, 3),
            # the same run per CPU second (Node harness + this process): what the speed would
            # be with a core each, whatever else the machine is doing
            "sim.speed_rp2040_cpu_x": round(sim_s / cpu, 3) if cpu > 0 else None,
            "sim.load_avg_rp2040": round(os.getloadavg()[0], 1),
        }
    finally:
        sim.close()


def bench_rp2040() -> dict:
    from host.rp2_image import image
    img = image()
    out = steady(img)
    peak, _trials = heap_peak(img)
    out["fw.heap_peak_bytes"] = peak
    out["fw.image_bytes_rp2040"] = img.size
    return out


BENCHMARKS = {"rp2040": bench_rp2040}

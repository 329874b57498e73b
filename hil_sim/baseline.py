"""The baseline controller: how the open-source syringe pumps work, as a simulator runtime.

Open-loop constant stepping (the programmed volume line turned into µsteps, nothing else: no
slack take-up, no encoder feedback, no pressure trend), a fixed occlusion threshold with a
three-sample debounce and no back-off after the alarm (CONTEXT.md §6: OpenSyringePump,
Poseidon, the Karpova-Lab pump). It implements the same `slice()` contract as the firmware
runtimes (``hil_sim.runtime``) and a subset of protocol v0 — HELLO, STATUS, PROG (rate and
VTBI, VTBI and duration, or drug dose over a duration), START, PAUSE, RESUME, STOP, ACK, TLM,
CFG (``occl_mmhg``/``occl_level``; other keys accepted and ignored), HB and VITALS (relayed,
never acted on) — so scenarios and benchmarks can run it side by side with the firmware in
the same plant and report ``baseline.`` figures. Alarms: OCCLUSION (3), VTBI_DONE (1).
"""
from __future__ import annotations

import json
from pathlib import Path

from host.codec import FrameError, decode_request, encode_error, encode_event, encode_ok, encode_telemetry

ROOT = Path(__file__).resolve().parent.parent
TICK_MS = 50
LEVELS = {"L": 200, "M": 400, "H": 800}


class BaselineRuntime:
    name = "baseline"
    fw_version = "baseline-openloop-1"

    def __init__(self, nl_per_kstep: int | None = None, occl_mmhg: int = 300,
                 lib_path: str | Path | None = None) -> None:
        self.nl_per_kstep = nl_per_kstep or 217078
        self.default_occl = occl_mmhg
        from host._firmware import druglib_path
        self._lib = json.loads(Path(lib_path or druglib_path()).read_text())
        self.restart()

    def restart(self, cause: str = "power") -> None:
        """No persistence: a restart forgets everything (as the open-source pumps do)."""
        self.state = "IDLE"
        self.rate = 0
        self.vtbi = 0
        self.occl = self.default_occl
        self.alarm = "NONE"
        self.prio = 0
        self.el_ms = 0
        self._reset_line()
        self._occ_n = 0
        self._buf = bytearray()
        self._next_ctrl: int | None = None
        self._tlm = 0
        self._next_tlm = 0
        self._press = 0
        self._last: tuple[int, bytes] | None = None

    def _reset_line(self) -> None:
        self.target_nl = 0
        self._vrem = 0
        self.steps = 0

    @property
    def delivered_nl(self) -> int:
        return self.steps * self.nl_per_kstep // 1000

    # ------------------------------------------------------------------ slice contract
    def slice(self, t0_ms, step_ms, n, press_mmhg, enc, flags, batt_mv, rx):
        self._press = press_mmhg
        steps = [0] * n
        tx: list[tuple[int, bytes]] = []
        j = 0
        for k in range(n):
            now = t0_ms + k * step_ms
            out: list[bytes] = []
            while j < len(rx) and rx[j][0] == k:
                self._buf += rx[j][1]
                j += 1
            while b"\n" in self._buf:
                i = self._buf.index(b"\n")
                line = bytes(self._buf[:i]).rstrip(b"\r")
                del self._buf[: i + 1]
                if line:
                    self._handle(line, out, now)
            if self._next_ctrl is None:
                self._next_ctrl = now
            if now - self._next_ctrl >= 0 or now < self._next_ctrl - (1 << 29):
                steps[k] = self._control(out, now)
                self._next_ctrl = (now + TICK_MS) & ((1 << 30) - 1)
            for b in out:
                tx.append((k, b))
        enable = 1 if self.state == "RUNNING" else 0
        return steps, enable, self.prio, tx

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ control
    def _control(self, out: list[bytes], now: int) -> int:
        s = 0
        if self.state == "RUNNING":
            if self._press >= self.occl:
                self._occ_n += 1
                if self._occ_n >= 3:
                    self._raise(out, "OCCLUSION", 3)
                    self._set_state(out, "ALARM")
                    return 0
            else:
                self._occ_n = 0
            self.el_ms += TICK_MS
            acc = self._vrem + self.rate * TICK_MS
            dv = acc // 3600
            self._vrem = acc - dv * 3600
            if self.target_nl + dv >= self.vtbi:
                dv = self.vtbi - self.target_nl
            self.target_nl += dv
            want = self.target_nl * 1000 // self.nl_per_kstep
            s = want - self.steps
            self.steps = want
            if self.target_nl >= self.vtbi:
                self._set_state(out, "COMPLETE")
                self._raise(out, "VTBI_DONE", 1)
        if self._tlm and now - self._next_tlm >= 0:
            self._next_tlm = now + self._tlm
            out.append(encode_telemetry({"state": self.state, "del_nl": self.delivered_nl,
                                         "rate_ul_h": self.rate if self.state == "RUNNING" else 0,
                                         "p_mmhg": self._press, "el_ms": self.el_ms}))
        return s

    def _raise(self, out, name, prio):
        if prio >= self.prio:
            self.alarm, self.prio = name, prio
        out.append(encode_event("ALARM", {"alarm": name, "prio": prio}))

    def _clear(self, out):
        if self.alarm != "NONE":
            out.append(encode_event("CLEAR", {"alarm": self.alarm}))
            self.alarm, self.prio = "NONE", 0

    def _set_state(self, out, st):
        if st != self.state:
            self.state = st
            out.append(encode_event("STATE", {"state": st}))

    # ------------------------------------------------------------------ commands
    def _handle(self, line: bytes, out: list[bytes], now: int) -> None:
        try:
            req = decode_request(line)
        except FrameError as e:
            out.append(encode_error(None, "CRC" if "CRC" in str(e) else "SYNTAX", "bad frame"))
            return
        if self._last and self._last[0] == req.id and req.has_crc:
            out.append(self._last[1])
            return
        events: list[bytes] = []
        reply = self._dispatch(req, events)        # the reply goes out before its events
        out.append(reply)
        out.extend(events)
        if req.has_crc:
            self._last = (req.id, reply)

    def _dispatch(self, req, out) -> bytes:
        w, f, rid = req.word, req.fields, req.id
        st = self.state
        if w == "HELLO":
            return encode_ok(rid, {"dev": "BASELINE", "fw": self.fw_version, "proto": 0,
                                   "lib": self._lib.get("version", "?"), "libh": "0" * 16,
                                   "tick_ms": TICK_MS})
        if w == "STATUS":
            return encode_ok(rid, {"state": st, "rate_ul_h": self.rate, "vtbi_nl": self.vtbi,
                                   "del_nl": self.delivered_nl, "el_ms": self.el_ms,
                                   "p_mmhg": self._press, "alarm": self.alarm, "prio": self.prio})
        if w in ("HB", "VITALS"):
            return encode_ok(rid, {"action": "none"} if w == "VITALS" else {})
        if w == "TLM":
            self._tlm = int(f.get("period_ms", "0"))
            return encode_ok(rid, {"period_ms": self._tlm})
        if w == "CFG":
            if "occl_level" in f:
                self.occl = LEVELS.get(f["occl_level"], self.occl)
            if "occl_mmhg" in f:
                self.occl = int(f["occl_mmhg"])
            return encode_ok(rid, {"occl_mmhg": self.occl})
        if w == "PROG":
            if st not in ("IDLE", "PROGRAMMED", "COMPLETE"):
                return encode_error(rid, "STATE", f"not allowed in {st}")
            try:
                rate, vtbi = self._program(f)
            except (KeyError, ValueError) as e:
                return encode_error(rid, "ARG", str(e).replace("*", "")[:60] or "bad program")
            self.rate, self.vtbi = rate, vtbi
            self._clear(out)
            self._set_state(out, "PROGRAMMED")
            return encode_ok(rid, {"rate_ul_h": rate, "vtbi_nl": vtbi,
                                   "dur_ms": -(-vtbi * 3600 // rate)})
        moves = {"START": ("PROGRAMMED",), "PAUSE": ("RUNNING",), "RESUME": ("PAUSED",),
                 "STOP": ("PROGRAMMED", "RUNNING", "PAUSED", "COMPLETE", "ALARM"), "ACK": ("ALARM",)}
        if w not in moves:
            return encode_error(rid, "UNKNOWN", "no such command")
        if st not in moves[w]:
            return encode_error(rid, "STATE", f"not allowed in {st}")
        if w == "START":
            self._reset_line()
            self.el_ms = 0
            self._occ_n = 0
            new = "RUNNING"
        elif w == "PAUSE":
            new = "PAUSED"
        elif w == "RESUME":
            self._occ_n = 0
            new = "RUNNING"
        elif w == "STOP":
            self._clear(out)
            self.rate = self.vtbi = 0
            new = "IDLE"
        else:  # ACK
            if self.alarm == "OCCLUSION" and self._press * 2 >= self.occl:
                return encode_error(rid, "STATE", "alarm condition still present")
            self._clear(out)
            new = "PAUSED"
        reply = encode_ok(rid, {"state": new})
        self._set_state(out, new)
        return reply

    def _program(self, f: dict[str, str]) -> tuple[int, int]:
        if "drug" in f:
            drug = next(d for d in self._lib["drugs"] if d["name"] == f["drug"])
            wt = int(f["wt_g"])
            amount_ug = int(f["dose_ug_kg"]) * wt // 1000
            vtbi = amount_ug * 1_000_000 // int(drug["conc_ug_ml"])
            rate = vtbi * 3600 // int(f["over_ms"])
        elif "rate_ul_h" in f:
            rate, vtbi = int(f["rate_ul_h"]), int(f["vtbi_nl"])
        else:
            vtbi = int(f["vtbi_nl"])
            rate = vtbi * 3600 // int(f["dur_ms"])
        if not (100 <= rate <= 1_200_000 and 1000 <= vtbi <= 1_000_000_000):
            raise ValueError("rate or volume out of range")
        return rate, vtbi

"""A scripted fake pump on the master side of a real pseudo-terminal, for host tests.

It follows docs/protocol.md closely enough for the client: the state table from the
firmware, a retry cache keyed by (id, CRC), EV STATE after state-changing replies, the
commands added in this protocol version (STEP, TITRATE, BOLUS, STANDBY, SILENCE, VITALS,
HB, CFG, LOG), authentication (HMAC-SHA256, monotonic counter), and knobs to lose replies,
answer ``? ER CRC``, stay silent, inject events and garbage, drop log records, reboot.
"""
from __future__ import annotations

import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field

from host import codec
from host.auth import OPEN_WORDS, mac_hex
from host.codec import LineSplitter
from host.druglib import DrugLibrary
from host.statemachine import COMMAND_WORDS, GUARDED_WORDS, target

LIB = DrugLibrary.load()


@dataclass
class FakePump:
    """A scripted pump on the master side of a pty; ``path`` is the slave to open."""
    proto: int = codec.PROTO_VERSION
    libh: str = LIB.sha16
    dev: str = "FAKE-1"
    state: str = "IDLE"
    silent: bool = False            # never answer
    lose_replies: int = 0           # execute but do not send the next N replies
    crc_errors: int = 0             # answer the next N frames with "? ER CRC"
    refuse_next: tuple[str, str] | None = None   # (code, reason): refuse the next request
    before_reply: list[bytes] = field(default_factory=list)   # written before the next reply
    received: list[bytes] = field(default_factory=list)        # every request line received
    executed: list[codec.Request] = field(default_factory=list)
    tlm_period_ms: int = 0
    rate_ul_h: int = 0
    vtbi_nl: int = 0
    del_nl: int = 0
    drug: str | None = None         # the program's drug (STATUS drug=, "-" for none)
    key: bytes | None = None        # provisioned key (None: no key.bin)
    auth: bool = False              # CFG auth=1
    ctr: int = 0                    # last accepted counter
    report_auth: bool = True        # HELLO carries auth= and ctr=
    log: list[dict] = field(default_factory=list)   # event-log records
    lose_log: int = 0               # drop the next N log records
    settings: dict = field(default_factory=lambda: {"occl_mmhg": 300, "hb_ms": 0,
                                                    "hb_action": "continue", "interlock": 0,
                                                    "auth": 0})
    steps: dict = field(default_factory=dict)
    tlm_sent: int = 0               # telemetry frames sent (tests wait on counts, not time)

    def __post_init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self._stop_r, self._stop_w = os.pipe()
        self._lock = threading.Lock()
        self._last: tuple[int, bytes, bytes] | None = None   # (id, crc text, reply)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.boots = 1

    # ---- plumbing
    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        self._thread.join(2)
        for fd in (self.master, self.slave, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def hang_up(self) -> None:
        """Simulate the device disappearing: stop and close both pty ends."""
        self.close()

    def reboot(self) -> None:
        """Power-cycle: program, state, retry cache and telemetry are lost; the key, the
        counter and the log are kept (they live in flash)."""
        with self._lock:
            self.state = "IDLE"
            self.rate_ul_h = self.vtbi_nl = self.del_nl = 0
            self.drug = None
            self.tlm_period_ms = 0
            self._last = None
            self.steps = {}
            self.boots += 1

    def _run(self) -> None:
        split = LineSplitter()
        next_tlm = None
        while True:
            wait = None
            if self.tlm_period_ms:
                now = time.monotonic()
                next_tlm = next_tlm or now
                wait = max(0.0, next_tlm - now)
            r, _, _ = select.select([self.master, self._stop_r], [], [], wait)
            if self._stop_r in r:
                return
            if self.master in r:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    return
                for line in split.feed(data):
                    self._handle(line)
            if self.tlm_period_ms and next_tlm is not None and time.monotonic() >= next_tlm:
                next_tlm += self.tlm_period_ms / 1000
                self.tlm_sent += 1
                self.write(codec.encode_telemetry({"state": self.state, "del_nl": self.del_nl,
                                                   "rate_ul_h": self.rate_ul_h, "p_mmhg": 20,
                                                   "el_ms": 0}))

    # ---- the pump
    def _handle(self, line: bytes) -> None:
        with self._lock:
            self.received.append(line)
            if self.silent:
                return
            if self.crc_errors:
                self.crc_errors -= 1
                self.write(codec.encode_error(None, "CRC", "bad CRC"))
                return
            try:
                req = codec.decode_request(line)
            except codec.FrameError:
                self.write(codec.encode_error(None, "CRC", "bad CRC"))
                return
            crc = line.rpartition(b"*")[2]
            if self._last and self._last[0] == req.id and self._last[1] == crc and req.has_crc:
                reply, events = self._last[2], b""
            else:
                reply, events = self._authenticate(line, req)
                if reply is None and self.refuse_next is not None and req.word != "HELLO":
                    reply, events = codec.encode_error(req.id, *self.refuse_next), b""
                    self.refuse_next = None
                if reply is None and req.word in GUARDED_WORDS:
                    # the reboot guard (docs/protocol.md, *Boot number*)
                    if req.fields.get("boot") != str(self.boots):
                        reply, events = codec.encode_error(req.id, "BOOT", "not this boot"), b""
                req.fields.pop("boot", None)
                if reply is None:
                    self.executed.append(req)
                    reply, events = self._execute(req)
                self._last = (req.id, crc, reply)
            for extra in self.before_reply:
                self.write(extra)
            self.before_reply = []
            # reply and its events in one write, as the firmware sends them back to back: a
            # frame another thread writes (fake.write) can never land between the two
            if self.lose_replies:
                self.lose_replies -= 1
                reply = b""
            if reply or events:
                self.write(reply + events)

    def _authenticate(self, line: bytes, req: codec.Request) -> tuple[bytes | None, bytes]:
        """None when the request may run; else the ER AUTH reply."""
        f = req.fields
        signed = "mac" in f or "ctr" in f
        if req.word in OPEN_WORDS or (not self.auth and not signed):
            return None, b""
        if not signed:
            return codec.encode_error(req.id, "AUTH", "needs ctr and mac"), b""
        if self.key is None:
            return codec.encode_error(req.id, "AUTH", "no key provisioned"), b""
        body = line.partition(b"*")[0]
        head, sep, _ = body.rpartition(b" mac=")
        if not sep or not f.get("ctr", "").isdigit():
            return codec.encode_error(req.id, "AUTH", "mac must be the last field"), b""
        if mac_hex(self.key, head) != f["mac"]:
            return codec.encode_error(req.id, "AUTH", "wrong mac"), b""
        if int(f["ctr"]) <= self.ctr:
            return codec.encode_error(req.id, "AUTH", "replayed counter"), b""
        self.ctr = int(f["ctr"])
        del f["ctr"], f["mac"]
        return None, b""

    def _execute(self, req: codec.Request) -> tuple[bytes, bytes]:
        w, f = req.word, req.fields
        if w == "HELLO":
            ok: dict[str, int | str] = {"dev": self.dev, "fw": "0.1.0", "proto": self.proto,
                                        "lib": LIB.version, "libh": self.libh, "tick_ms": 10,
                                        "boot": self.boots}
            if self.report_auth:
                ok["auth"] = int(self.auth)
                if self.key is not None:
                    ok["ctr"] = self.ctr
            return codec.encode_ok(req.id, ok), b""
        if w == "STATUS":
            return codec.encode_ok(req.id, {"state": self.state, "rate_ul_h": self.rate_ul_h,
                                            "vtbi_nl": self.vtbi_nl, "del_nl": self.del_nl,
                                            "el_ms": 1000, "alarm": "NONE", "prio": 0,
                                            "drug": self.drug or "-"}), b""
        if w == "TLM":
            p = int(f["period_ms"])
            if p != 0 and not codec.TLM_MIN <= p <= codec.TLM_MAX:     # the firmware's bounds
                return codec.encode_error(req.id, "RANGE", "period_ms must be 0 or "
                                          f"{codec.TLM_MIN}..{codec.TLM_MAX}"), b""
            self.tlm_period_ms = p
            return codec.encode_ok(req.id, {"period_ms": self.tlm_period_ms}), b""
        if w == "HB":
            return codec.encode_ok(req.id), b""
        if w == "SILENCE":
            return codec.encode_ok(req.id, {"until_ms": 120000}), b""
        if w == "VITALS":
            return codec.encode_ok(req.id, {"action": "none"}), b""
        if w == "CFG":
            for k, v in f.items():
                if k not in self.settings:
                    return codec.encode_error(req.id, "ARG", f"unknown setting {k}"), b""
                self.settings[k] = int(v) if v.isdigit() else v
            if "auth" in f:
                if self.settings["auth"] and self.key is None:
                    self.settings["auth"] = 0
                    return codec.encode_error(req.id, "AUTH", "no key provisioned"), b""
                self.auth = bool(self.settings["auth"])
            return codec.encode_ok(req.id, self.settings), b""
        if w == "LOG":
            start, mx = int(f.get("from", 0)), min(32, int(f.get("max", 32)))
            recs = [r for r in self.log if r["seq"] >= start][:mx]
            nxt = recs[-1]["seq"] + 1 if recs else start
            out = b""
            for r in recs:
                if self.lose_log:
                    self.lose_log -= 1
                    continue
                out += codec.encode_log(r)
            return codec.encode_ok(req.id, {"n": len(recs), "next": nxt}), out
        if w == "STEP":
            if self.state not in ("IDLE", "PROGRAMMED", "COMPLETE"):
                return codec.encode_error(req.id, "STATE", f"not allowed in {self.state}"), b""
            self.steps[int(f["i"])] = dict(f)
            return codec.encode_ok(req.id, {k: v for k, v in f.items()}), b""
        if w == "TITRATE":
            if self.state not in ("RUNNING", "PAUSED"):
                return codec.encode_error(req.id, "STATE", f"not allowed in {self.state}"), b""
            self.rate_ul_h = int(f["rate_ul_h"]) if "rate_ul_h" in f else int(f["dose_ug_kg_h"])
            return codec.encode_ok(req.id, {"rate_ul_h": self.rate_ul_h}), b""
        if w == "BOLUS":
            if self.state != "RUNNING":
                return codec.encode_error(req.id, "STATE", f"not allowed in {self.state}"), b""
            return codec.encode_ok(req.id, {"vol_nl": f["vol_nl"], "rate_ul_h": f["rate_ul_h"]}), b""
        if w not in COMMAND_WORDS:
            return codec.encode_error(req.id, "UNKNOWN", "no such command"), b""
        dest = target(COMMAND_WORDS[w], self.state)
        if dest is None:
            return codec.encode_error(req.id, "STATE", f"not allowed in {self.state}"), b""
        ok = {}
        if w == "PROG":
            self.drug = f.get("drug")
            if "steps" in f:
                n = int(f["steps"])
                if any(i not in self.steps for i in range(n)):
                    return codec.encode_error(req.id, "ARG", "missing step"), b""
                total = sum(int(self.steps[i].get("vol_nl", 0)) for i in range(n))
                self.rate_ul_h, self.vtbi_nl = int(self.steps[0]["rate_ul_h"]), total
                ok = {"rate_ul_h": self.rate_ul_h, "vtbi_nl": total, "dur_ms": 1, "steps": n}
            elif "dose_ug_kg_h" in f:
                self.rate_ul_h = int(f["dose_ug_kg_h"]) * int(f["wt_g"]) // 1000
                self.vtbi_nl = int(f.get("vtbi_nl", 1_000_000))
                ok = {"drug": f["drug"], "rate_ul_h": self.rate_ul_h, "vtbi_nl": self.vtbi_nl,
                      "dur_ms": 1, "soft": 0}
            elif "drug" in f:
                plan = LIB.plan(f["drug"], int(f["dose_ug_kg"]), int(f["wt_g"]), int(f["over_ms"]))
                if plan.hard:
                    return codec.encode_error(req.id, "LIMIT", plan.hard[0]), b""
                if plan.soft and f.get("confirm") != "1":
                    return codec.encode_error(req.id, "SOFT", "outside soft limits; resend "
                                              "with confirm=1"), b""
                ok = {"drug": plan.drug, "dose_ug": plan.dose_ug, "rate_ul_h": plan.rate_ul_h,
                      "vtbi_nl": plan.vtbi_nl, "dur_ms": plan.over_ms, "soft": int(bool(plan.soft))}
                self.rate_ul_h, self.vtbi_nl = plan.rate_ul_h, plan.vtbi_nl
            else:
                self.rate_ul_h, self.vtbi_nl = int(f["rate_ul_h"]), int(f["vtbi_nl"])
                ok = {"rate_ul_h": self.rate_ul_h, "vtbi_nl": self.vtbi_nl,
                      "dur_ms": -(-self.vtbi_nl * 3600 // self.rate_ul_h)}
        else:
            ok = {"state": dest}
            if w == "STOP":         # STOP clears the program (its drug too); del_nl stays
                self.drug, self.rate_ul_h, self.vtbi_nl = None, 0, 0
        changed = dest != self.state
        self.state = dest
        event = codec.encode_event("STATE", {"state": dest}) if changed else b""
        return codec.encode_ok(req.id, ok), event

    def count(self, word: str) -> int:
        return sum(1 for r in self.executed if r.word == word)

    def lines_with(self, word: str) -> list[bytes]:
        return [ln for ln in self.received if f" {word}".encode() in ln]

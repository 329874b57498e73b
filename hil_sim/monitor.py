"""The simulated bedside monitor: the patient model's vitals as IHE PCD-01 ``ORU^R01`` messages.

This module owns the monitor and nothing else (docs/hl7.md):

* `Monitor` — pure, in virtual time: ``poll(t_ms)`` returns the messages due up to ``t_ms``.
  Non-invasive BP cycles every ``nibp_interval_s`` (the cuff takes ``nibp_duration_s``; the
  reading's time, OBX-14, is when it ends), HR (ECG) and SpO2 are published every
  ``numeric_interval_s``. Motion artefacts come as a Poisson process (``artefacts_per_h``, each
  ``artefact_s`` long): SpO2 reads invalid (OBX-11 ``X``, no value, as monitors show "?"), the
  ECG heart rate gets noisier, an NIBP cycle ending inside one fails (``X``). Dropouts (random,
  ``dropouts_per_h``, or scheduled, ``dropouts``) are spans in which the monitor's messages
  never leave it; scheduled ones count from the start of the infusion (the first drug the
  patient gets), so they mean the same under `sim run` and a host that starts the pump late. Values are the patient's `true_vitals` plus the monitor's own seeded noise
  (σ 4/3 mmHg NIBP, 2 /min HR, 0.5 % SpO2, as `hil_sim.patient`).
* `MonitorSender` — the shell: a thread sending those messages with python-hl7's unmodified
  `MLLPClient` over TCP, counting the ACK codes it gets back. While the bridge is not there, a
  message is lost (as a real monitor's real-time feed is), and each message tries to connect
  once: the attempts follow the monitor's own (virtual) clock, never a wall-clock back-off, so
  a lock-step server loses the same messages whatever the machine's speed.

The monitor's clock starts at ``epoch_s`` (UTC seconds; default: the wall clock at creation),
so at real-time speed its MSH-7 agrees with the bridge's clock.
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import queue
import random
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

# (code, MDC reference id, unit code, unit reference id): IEEE 11073-10101 partition 2 terms
NIBP_SYS = ("150021", "MDC_PRESS_BLD_NONINV_SYS", "266016", "MDC_DIM_MMHG")
NIBP_DIA = ("150022", "MDC_PRESS_BLD_NONINV_DIA", "266016", "MDC_DIM_MMHG")
NIBP_MEAN = ("150023", "MDC_PRESS_BLD_NONINV_MEAN", "266016", "MDC_DIM_MMHG")
ECG_HR = ("147842", "MDC_ECG_HEART_RATE", "264864", "MDC_DIM_BEAT_PER_MIN")
SPO2 = ("150456", "MDC_PULS_OXIM_SAT_O2", "262688", "MDC_DIM_PERCENT")
PULSE = ("149530", "MDC_PULS_OXIM_PULS_RATE", "264864", "MDC_DIM_BEAT_PER_MIN")


@dataclass(frozen=True)
class MonitorParams:
    patient_id: str = "PAT-1"
    nibp_interval_s: float = 120.0       # NIBP cycle (clinical settings: 1-15 min)
    nibp_duration_s: float = 30.0        # one cuff inflation/deflation
    nibp_first_s: float = 5.0            # the first cycle starts then
    numeric_interval_s: float = 5.0      # HR and SpO2 published this often
    artefacts_per_h: float = 0.0         # motion artefact episodes (Poisson)
    artefact_s: tuple[float, float] = (10.0, 40.0)
    dropouts_per_h: float = 0.0          # feed dropouts (Poisson)
    dropout_s: tuple[float, float] = (20.0, 120.0)
    dropouts: tuple[tuple[float, float], ...] = ()   # scheduled (start_s, duration_s)
    noise: bool = True

    def __post_init__(self) -> None:
        for name in ("nibp_interval_s", "nibp_duration_s", "numeric_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"monitor {name} must be > 0")
        if self.nibp_duration_s >= self.nibp_interval_s:
            raise ValueError("monitor nibp_duration_s must be shorter than nibp_interval_s")
        for name in ("artefacts_per_h", "dropouts_per_h"):
            if getattr(self, name) < 0:
                raise ValueError(f"monitor {name} must be >= 0")

    @classmethod
    def from_toml(cls, d: dict) -> "MonitorParams":
        """From a scenario's ``[monitor]`` table (keys as the fields; ``dropouts`` as a list of
        ``{at_s, for_s}``)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown [monitor] key(s) {sorted(unknown)}; known: {sorted(known)}")
        kw = dict(d)
        if "dropouts" in kw:
            kw["dropouts"] = tuple((float(x["at_s"]), float(x["for_s"])) for x in kw["dropouts"])
        for k in ("artefact_s", "dropout_s"):
            if k in kw:
                kw[k] = tuple(float(v) for v in kw[k])
        return cls(**kw)


def ts(t_s: float) -> str:
    """UTC seconds as an HL7 DTM with milliseconds and offset."""
    t = _dt.datetime.fromtimestamp(t_s, _dt.timezone.utc)
    return t.strftime("%Y%m%d%H%M%S") + f".{t.microsecond // 1000:03d}+0000"


def oru_r01(cid: str, patient_id: str, at_s: float, obs: list[tuple]) -> str:
    """An IHE PCD-01 ORU^R01: MSH, PID, PV1, OBR, the MDS OBX, then one OBX per
    ``(term, value or None, time_s, status)``; a None value is sent empty (status X)."""
    segs = [f"MSH|^~\\&|INFUSEKIT_SIM_MONITOR^0012345678ABCDEF^EUI-64|ICU|||{ts(at_s)}||"
            f"ORU^R01^ORU_R01|{cid}|P|2.6|||NE|AL||UNICODE UTF-8|||"
            "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
            f"PID|||{patient_id}^^^INFUSEKIT^MR",
            "PV1||I|ICU^^BED1",
            f"OBR|1|{cid}^INFUSEKIT_SIM_MONITOR||182777000^monitoring of patient^SCT|||{ts(at_s)}",
            "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X"]
    for i, (term, value, t_s, status) in enumerate(obs, 2):
        code, name, ucode, uname = term
        v = "" if value is None else str(value)
        segs.append(f"OBX|{i}|NM|{code}^{name}^MDC|1.0.1.{i}|{v}|{ucode}^{uname}^MDC|||||"
                    f"{status}|||{ts(t_s)}")
    return "\r".join(segs) + "\r"


class _Spans:
    """Random (Poisson) plus scheduled spans of time, drawn lazily and in order."""

    def __init__(self, rng: random.Random, per_h: float, dur: tuple[float, float],
                 fixed: tuple[tuple[float, float], ...] = ()) -> None:
        self.rng, self.per_s, self.dur = rng, per_h / 3600.0, dur
        self.spans = sorted((a, a + d) for a, d in fixed)
        self._next = rng.expovariate(self.per_s) if self.per_s > 0 else math.inf

    def inside(self, t_s: float) -> bool:
        while self._next <= t_s:                # draw the random spans that start by then
            d = self.rng.uniform(*self.dur)
            self.spans.append((self._next, self._next + d))
            self._next += d + self.rng.expovariate(self.per_s)
        return any(a <= t_s < b for a, b in self.spans)


@dataclass
class Monitor:
    """The monitor in virtual time; ``poll(t_ms)`` -> the PCD-01 messages due by then."""
    patient: object                      # hil_sim.patient.Patient (true_vitals())
    params: MonitorParams = field(default_factory=MonitorParams)
    seed: int = 0
    epoch_s: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        p = self.params
        self._rng = random.Random(f"{self.seed}:monitor:noise")
        self._art = _Spans(random.Random(f"{self.seed}:monitor:artefacts"), p.artefacts_per_h,
                           p.artefact_s)
        self._drop = _Spans(random.Random(f"{self.seed}:monitor:dropouts"), p.dropouts_per_h,
                            p.dropout_s)
        self._fixed = sorted((a, a + d) for a, d in p.dropouts)
        self.t_infusion: float | None = None     # virtual s when the patient first got drug
        self._next_num = 0.0
        self._next_nibp_end = p.nibp_first_s + p.nibp_duration_s
        self._n = 0
        self.sent = 0                    # messages handed out
        self.lost = 0                    # messages a dropout swallowed
        self.nibp_failed = 0

    def _noise(self, sd: float) -> float:
        return self._rng.gauss(0.0, sd) if self.params.noise else 0.0

    def poll(self, t_ms: float) -> list[str]:
        out = []
        p = self.params
        t_now = t_ms / 1000.0
        while True:
            t = min(self._next_num, self._next_nibp_end)
            if t > t_now:
                return out
            sbp, dbp, hr, spo2 = self.patient.true_vitals()
            art = self._art.inside(t)
            obs = []
            tw = self.epoch_s + t                 # the monitor's clock
            if t == self._next_nibp_end:
                self._next_nibp_end += p.nibp_interval_s
                if art:                       # motion during the cuff cycle: the reading fails
                    self.nibp_failed += 1
                    obs += [(NIBP_SYS, None, tw, "X"), (NIBP_DIA, None, tw, "X")]
                else:
                    s = round(sbp + self._noise(4.0))
                    d = round(dbp + self._noise(3.0))
                    obs += [(NIBP_SYS, s, tw, "R"), (NIBP_DIA, d, tw, "R"),
                            (NIBP_MEAN, round(d + (s - d) / 3), tw, "R")]
            if t == self._next_num:
                self._next_num += p.numeric_interval_s
                h = round(hr + self._noise(10.0 if art else 2.0))
                obs.append((ECG_HR, max(h, 1), tw, "R"))
                if art:
                    obs += [(SPO2, None, tw, "X"), (PULSE, None, tw, "X")]
                else:
                    obs += [(SPO2, min(100, round(spo2 + self._noise(0.5))), tw, "R"),
                            (PULSE, max(1, round(hr + self._noise(2.0))), tw, "R")]
            self._n += 1
            if self.t_infusion is None and getattr(self.patient, "total_mg", 0) > 0:
                self.t_infusion = t
            rel = None if self.t_infusion is None else t - self.t_infusion
            if self._drop.inside(t) or (rel is not None and any(a <= rel < b for a, b in self._fixed)):
                self.lost += 1
                continue
            self.sent += 1
            out.append(oru_r01(f"SIM{self.seed}-{self._n:07d}", p.patient_id,
                               self.epoch_s + t, obs))


def parse_mllp_url(url: str) -> tuple[str, int]:
    if not url.startswith("mllp://"):
        raise ValueError(f"{url!r}: expected mllp://HOST:PORT")
    host, sep, port = url[7:].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{url!r}: expected mllp://HOST:PORT with a port 1..65535")
    return host.strip("[]"), int(port)


class MonitorSender:
    """Sends queued messages to ``mllp://HOST:PORT`` with python-hl7's `MLLPClient`, one at a
    time, each waiting for its ACK; ``acks`` counts the MSA-1 codes received."""

    def __init__(self, url: str, ack_timeout_s: float = 10.0) -> None:
        self.host, self.port = parse_mllp_url(url)
        self.url = url
        self.ack_timeout_s = ack_timeout_s
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-monitor", daemon=True)
        self.acks: dict[str, int] = {}
        self.unsent = 0
        self.last_ack = ""
        self._pending = 0                    # put, not yet acknowledged or given up
        self._lock = threading.Lock()

    def start(self) -> "MonitorSender":
        self._thread.start()
        return self

    def put(self, message: str) -> None:
        with self._lock:
            self._pending += 1
        self._q.put(message)

    def busy(self) -> bool:
        """A message is queued or waits for its ACK (a lock-step server holds its clock)."""
        return self._pending > 0 and self._thread.is_alive()

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1

    def _connect(self):
        from hl7.client import MLLPClient
        c = MLLPClient(self.host, self.port)
        c.socket.settimeout(self.ack_timeout_s)
        return c

    def _run(self) -> None:
        import hl7
        client = None
        while not self._stop.is_set():
            try:
                msg = self._q.get(timeout=0.1)
            except queue.Empty:
                continue
            if client is None:              # one attempt per message (module doc)
                try:
                    client = self._connect()
                except OSError:
                    pass
            if client is None:
                self.unsent += 1            # no bridge: a real-time feed loses the message
                self._done()
                continue
            try:
                reply = client.send_message(msg)
                while not reply.endswith(b"\x1c\r"):
                    more = client.socket.recv(4096)
                    if not more:
                        raise ConnectionError("closed before the ACK ended")
                    reply += more
                ack = hl7.parse(reply.strip(b"\x0b\x1c\r").decode("utf-8", "replace"))
                code = str(ack.segment("MSA").extract_field(1, 1))
                self.acks[code] = self.acks.get(code, 0) + 1
                self.last_ack = code
            except (OSError, ValueError, KeyError) as e:
                log.info("monitor: %s; reconnecting", e)
                self.unsent += 1
                try:
                    client.close()
                except OSError:
                    pass
                client = None
            finally:
                self._done()
        if client is not None:
            client.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

"""The therapy envelope: what the pump may deliver, from the drug library and the accepted program.

An oracle for tests, campaigns and benchmarks, written independently of the controller: it
reads only `druglib.json` (its own conversion of the units, not `pumpcore.libload`) and the
fields of the program the pump accepted (the PROG request, plus the STEP entries of a steps
program). It never looks at the controller's variables. For every moment `t` (ms since the
first accepted START) it gives

* `rate_max()`        - the greatest rate the motor may follow (basal, titration, bolus), µL/h
* `kvo_rate_max()`    - the greatest keep-vein-open rate (0: this program may not KVO), µL/h
* `volume_max(t)`     - the greatest therapy volume (basal + clinician boluses, `del_nl`), nL
* `kvo_max(t)`        - the greatest KVO volume (`kvo_nl`), nL
* `dose_max(t)`       - the greatest amount of drug (therapy + KVO, all from one syringe), µg
* `segs`              - the accepted program's segments [(rate µL/h, volume nL), ...] as the
                        library's units give them (a loading dose then its maintenance; steps)

and `check(t, del_nl, kvo_nl, rate)` lists the bounds a report breaks. The bounds hold for
*any* sequence of commands the library allows (every legal titration, every legal bolus), so
a pump that accepts an illegal titration or bolus is caught by the delivery it makes:

* basal volume: never above the program's VTBI, never faster than the drug's `rate_ml_h_max`;
  a dose over time never faster than its VTBI over the drug's hard minimum time
  (`over_min.hard_min`); a continuous dose never above `dose_ug_kg_h.hard_max` for the
  patient's weight; a loading dose never faster than its volume over the hard minimum time;
* boluses: each at most `bolus_max_ul`, starts at least `bolus_lockout_min` apart, at most
  `bolus_max_h_ug` of drug in any 60 min (a bolus started in an hour counts whole);
* KVO: only for a drug whose `kvo_ul_h` > 0, never above it, never above the highest rate of
  the program;
* a slack of one control lag (`lag_ms`, the controller integrates from its last tick) and
  one microstep (`slack_nl`).

`refusal(fields, steps)` says independently whether the library allows a program at all
(hard limits, rate range, KVO rule); `titration_refusal(...)` the same for TITRATE by rate.

Pure Python in the subset both CPython and the `micropython` interpreter run: integers only,
no f-strings, `json` only.
"""
import json

RATE_MIN = 100                 # µL/h   the pump's own limits (docs/protocol.md)
RATE_MAX = 1200000             # µL/h
VTBI_MIN = 1000                # nL
VTBI_MAX = 1000000000          # nL
DURATION_MAX = 345600000       # ms (96 h)
KVO_MIN = 100                  # µL/h
KVO_MAX = 20000                # µL/h
KVO_DEFAULT = 1000             # µL/h without a drug
BOLUS_MAX_NL = 10000000        # 10 mL without a drug
MS_H = 3600000


def _i(x, scale):
    return int(x * scale + 0.5)


class Lim:
    def __init__(self, d, scale):
        self.hard_min = _i(d["hard_min"], scale)
        self.hard_max = _i(d["hard_max"], scale)
        self.soft_min = _i(d.get("soft_min", d["hard_min"]), scale)
        self.soft_max = _i(d.get("soft_max", d["hard_max"]), scale)

    def hard(self, v):
        return v < self.hard_min or v > self.hard_max

    def soft(self, v):
        return v < self.soft_min or v > self.soft_max


class DrugLimits:
    """One drug's entry in wire units (µg/kg, ms, g, µg/kg/h, µL/h, nL, µg)."""

    def __init__(self, d):
        self.name = d["name"]
        self.conc = int(d["conc_ug_ml"])
        self.concs = [int(c) for c in d.get("concs_ug_ml", [self.conc])]
        self.dose = Lim(d["dose_ug_kg"], 1)
        self.over = Lim(d["over_min"], 60000)
        self.weight = Lim(d["weight_kg"], 1000)
        self.dose_h = Lim(d["dose_ug_kg_h"], 1) if "dose_ug_kg_h" in d else None
        self.rate_max = _i(d["rate_ml_h_max"], 1000)
        self.bolus_nl = _i(d.get("bolus_max_ul", 0), 1000)
        self.lockout_ms = _i(d.get("bolus_lockout_min", 0), 60000)
        self.bolus_h_ug = d.get("bolus_max_h_ug", None)
        self.kvo = int(d.get("kvo_ul_h", 1000))


def load_library(src):
    """{name: DrugLimits} from a dict (parsed JSON), JSON text/bytes, or a file path."""
    if isinstance(src, dict):
        doc = src
    else:
        if isinstance(src, bytes):
            src = src.decode()
        if src.lstrip().startswith("{"):
            doc = json.loads(src)
        else:
            with open(src) as f:
                doc = json.loads(f.read())
    lib = {}
    for d in doc["drugs"]:
        lib[d["name"]] = DrugLimits(d)
    return lib


def parse_fields(text):
    """{key: int or str} of the `key=value` tokens of a request line (CRC and MAC ignored)."""
    if isinstance(text, bytes):
        text = text.decode()
    star = text.find("*")
    if star >= 0:
        text = text[:star]
    out = {}
    for tok in text.split():
        q = tok.find("=")
        if q <= 0:
            continue
        k = tok[:q]
        v = tok[q + 1:]
        if v.isdigit():
            out[k] = int(v)
        else:
            out[k] = v
    return out


def _dose_ug(dose_ug_kg, wt_g):
    return dose_ug_kg * wt_g // 1000


def _vol_nl(ug, conc):
    return ug * 1000000 // conc


def _ug(nl, conc):
    return nl * conc // 1000000


def _vol_at(rate, ms):
    return rate * ms // 3600


class Envelope:
    """The envelope of one accepted program. `program()` sets it; `stop()` clears it."""

    def __init__(self, library, lag_ms=250, slack_nl=218):
        self.lib = library if isinstance(library, dict) and not library.get("drugs") else load_library(library)
        self.lag_ms = lag_ms
        self.slack_nl = slack_nl
        self.stop()

    def stop(self):
        self.form = None
        self.drug = None
        self.conc = 0
        self.vtbi = 0          # basal total, nL
        self.load_nl = 0
        self.load_min_ms = 0
        self.maint_rate = 0    # µL/h ceiling of a continuous dose
        self.over_min_ms = 0   # dose over time: hard minimum duration
        self.rmax = RATE_MAX
        self.kvo_cap = 0
        self.top_rate = 0
        self.segs = []         # [(rate µL/h, volume nL), ...] of the accepted program

    # ------------------------------------------------------------------ program
    def refusal(self, f, steps=None):
        """Why the library refuses this PROG (fields dict) - a str - or None when it allows
        it. `steps`: [(rate_ul_h, vol_nl), ...] for `PROG steps=n`."""
        try:
            return self._plan(f, steps, False)
        except (KeyError, ValueError, ZeroDivisionError, TypeError) as e:
            return "malformed: " + repr(e)

    def program(self, f, steps=None):
        """Take an accepted PROG (fields dict, or the request line). Returns the refusal the
        library would have given (None when the program is legal)."""
        if isinstance(f, (str, bytes)):
            f = parse_fields(f)
        self.stop()
        try:
            return self._plan(f, steps, True)
        except (KeyError, ValueError, ZeroDivisionError, TypeError) as e:
            return "malformed: " + repr(e)

    def _plan(self, f, steps, keep):
        d = None
        if "drug" in f:
            d = self.lib.get(f["drug"])
            if d is None:
                return "drug not in library"
        conc = d.conc if d is not None else 0
        if d is not None and "conc_ug_ml" in f:
            conc = f["conc_ug_ml"]
            if conc not in d.concs:
                return "conc_ug_ml not a library concentration"
        rmax = d.rate_max if d is not None else RATE_MAX
        if rmax > RATE_MAX:
            rmax = RATE_MAX
        load_nl = 0
        load_min = 0
        maint = rmax
        over_min = 0
        segs = []
        if "steps" in f:
            form = "steps"
            if not steps or len(steps) != f["steps"]:
                return "steps not given"
            segs = list(steps)
        elif "dose_ug_kg_h" in f or "load_ug_kg" in f:
            form = "dose_rate"
            if d is None or d.dose_h is None:
                return "drug has no continuous-dose limits"
            wt = f["wt_g"]
            if d.weight.hard(wt):
                return "wt_g outside hard limits"
            if d.dose_h.hard(f["dose_ug_kg_h"]):
                return "dose_ug_kg_h outside hard limits"
            rate = f["dose_ug_kg_h"] * wt // conc
            maint = d.dose_h.hard_max * wt // conc
            if maint > rmax:
                maint = rmax
            vt = f["vtbi_nl"] if "vtbi_nl" in f else _vol_at(rate, f["dur_ms"])
            if "load_ug_kg" in f:
                if d.dose.hard(f["load_ug_kg"]) or d.over.hard(f["load_ms"]):
                    return "load outside hard limits"
                load_nl = _vol_nl(_dose_ug(f["load_ug_kg"], wt), conc)
                load_min = d.over.hard_min
                segs.append((load_nl * 3600 // f["load_ms"], load_nl))
            segs.append((rate, vt))
        elif "dose_ug_kg" in f:
            form = "dose"
            wt = f["wt_g"]
            if d is None:
                return "needs drug"
            if d.weight.hard(wt) or d.dose.hard(f["dose_ug_kg"]) or d.over.hard(f["over_ms"]):
                return "dose, weight or time outside hard limits"
            vt = _vol_nl(_dose_ug(f["dose_ug_kg"], wt), conc)
            segs.append((vt * 3600 // f["over_ms"], vt))
            over_min = d.over.hard_min
        else:
            form = "rate"
            vt = f["vtbi_nl"]
            rate = f["rate_ul_h"] if "rate_ul_h" in f else vt * 3600 // f["dur_ms"]
            segs.append((rate, vt))
        tot = 0
        dur = 0
        for r, v in segs:
            if not (RATE_MIN <= r <= RATE_MAX) or not (VTBI_MIN <= v <= VTBI_MAX):
                return "rate or volume outside the pump's range"
            if r > rmax:
                return "rate above the drug's hard max"
            tot += v
            dur += -((-v * 3600) // r)
        if tot > VTBI_MAX or dur > DURATION_MAX:
            return "total volume or duration too large"
        if form == "dose_rate" and segs[-1][0] > maint:
            return "dose rate above hard max"
        # KVO: only where the library allows it, never above the library's KVO
        kcap = d.kvo if d is not None else KVO_MAX
        if "kvo_ul_h" in f:
            k = f["kvo_ul_h"]
            if not isinstance(k, int) or (k != 0 and not (KVO_MIN <= k <= KVO_MAX)):
                return "kvo_ul_h out of range"
            if k > kcap:
                return "kvo_ul_h above the drug's KVO"
        if keep:
            self.form = form
            self.segs = segs
            self.drug = d
            self.conc = conc
            self.vtbi = tot
            self.load_nl = load_nl
            self.load_min_ms = load_min
            self.maint_rate = maint
            self.over_min_ms = over_min
            self.rmax = rmax
            top = 0
            for r, v in segs:
                if r > top:
                    top = r
            self.top_rate = top
            kc = kcap if d is not None else KVO_MAX
            self.kvo_cap = kc if kc < rmax else rmax
        return None

    # ------------------------------------------------------------------ bounds
    def rate_max(self):
        """The greatest rate the motor may follow for this program (µL/h)."""
        return self.rmax if self.form is not None else 0

    def kvo_rate_max(self):
        return self.kvo_cap if self.form is not None else 0

    def basal_max(self, t):
        """Greatest basal volume (nL) t ms after the first START."""
        if self.form is None or t <= 0:
            return 0
        t = t + self.lag_ms
        v = _vol_at(self.rmax, t)
        if self.form == "dose" and self.over_min_ms > 0:
            w = self.vtbi * t // self.over_min_ms
            if w < v:
                v = w
        elif self.form == "dose_rate":
            ln = self.load_nl
            if ln and self.load_min_ms > 0:
                x = ln * t // self.load_min_ms
                if x > ln:
                    x = ln
                if x > v:
                    x = v
            else:
                x = 0
            w = x + _vol_at(self.maint_rate, t)
            if w < v:
                v = w
        if v > self.vtbi:
            v = self.vtbi
        return v

    def bolus_max(self, t):
        """Greatest clinician-bolus volume (nL) t ms after the first START."""
        if self.form is None or t <= 0:
            return 0
        t = t + self.lag_ms
        d = self.drug
        v = _vol_at(self.rmax, t)
        if d is None:
            return v
        if d.bolus_nl <= 0:
            return 0
        if d.lockout_ms > 0:
            w = (t // d.lockout_ms + 1) * d.bolus_nl
            if w < v:
                v = w
        if d.bolus_h_ug:
            per_h = _vol_nl(int(d.bolus_h_ug), self.conc)
            # boluses that start in one hour may end in the next: one bolus of slack
            w = (t // MS_H + 1) * per_h + d.bolus_nl
            if w < v:
                v = w
        return v

    def volume_max(self, t):
        """Greatest therapy volume (basal + boluses, the pump's del_nl) at t (nL)."""
        if self.form is None:
            return 0
        return self.basal_max(t) + self.bolus_max(t) + self.slack_nl

    def kvo_max(self, t):
        """Greatest KVO volume (nL) at t."""
        if self.form is None or self.kvo_cap <= 0 or t <= 0:
            return 0
        return _vol_at(self.kvo_cap, t + self.lag_ms) + self.slack_nl

    def dose_max(self, t):
        """Greatest amount of drug (µg) at t: therapy and KVO come from the same syringe."""
        if self.drug is None:
            return 0
        return _ug(self.volume_max(t) + self.kvo_max(t), self.conc)

    def check(self, t, del_nl, kvo_nl=0, rate=None):
        """The bounds a report breaks (a list of str; empty inside the envelope). `del_nl`
        is the pump's del_nl (everything from the syringe, KVO included), `kvo_nl` its KVO
        part; the therapy part (del_nl - kvo_nl) is held to volume_max, the KVO part to
        kvo_max."""
        bad = []
        if self.form is None:
            if del_nl > 0 or kvo_nl > 0:
                # after STOP the pump reports nothing delivered for the (absent) program
                bad.append("delivery without an accepted program")
            return bad
        vm = self.volume_max(t)
        if del_nl - kvo_nl > vm:
            bad.append("therapy volume %d above %d" % (del_nl - kvo_nl, vm))
        km = self.kvo_max(t)
        if kvo_nl > km:
            bad.append("kvo_nl=%d above %d" % (kvo_nl, km))
        if rate is not None and rate > self.rmax:
            bad.append("rate=%d above %d" % (rate, self.rmax))
        return bad

    # ------------------------------------------------------------------ titration
    def titration_refusal(self, rate, e_ms, basal_nl, confirm=False, wt_g=0):
        """Why TITRATE rate_ul_h=rate is illegal now (str), or None. `e_ms`: time the
        program has run, `basal_nl`: basal volume delivered; `wt_g` for dose programs."""
        if self.form is None:
            return "no program"
        if not (RATE_MIN <= rate <= RATE_MAX):
            return "rate outside the pump's range"
        if rate > self.rmax:
            return "rate above the drug's hard max"
        d = self.drug
        if self.form == "dose_rate" and basal_nl >= self.load_nl:
            # the dose rate this rate gives the patient, compared in rate units
            lo = d.dose_h.hard_min * wt_g // self.conc
            hi = d.dose_h.hard_max * wt_g // self.conc
            if rate < lo or rate > hi:
                return "dose rate outside hard limits"
            slo = d.dose_h.soft_min * wt_g // self.conc
            shi = d.dose_h.soft_max * wt_g // self.conc
            if (rate < slo or rate > shi) and not confirm:
                return "dose rate outside soft limits without confirm"
        elif self.form == "dose" or self.form == "dose_rate":
            # a dose over time, or the loading dose: the time so far plus the rest of the
            # dose at the new rate stays within the drug's time limits
            rem = (self.vtbi if self.form == "dose" else self.load_nl) - basal_nl
            tot = e_ms + (-((-rem * 3600) // rate) if rem > 0 else 0)
            if tot < d.over.hard_min or tot > d.over.hard_max:
                return "time outside hard limits"
            if (tot < d.over.soft_min or tot > d.over.soft_max) and not confirm:
                return "time outside soft limits without confirm"
        return None

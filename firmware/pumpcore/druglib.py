"""The drug library the controller keeps: per-drug concentrations, soft/hard limits, bolus, KVO
and vital-sign limits, integers in wire units (µg/kg, µg/kg/h, ms, g, µL/h, nL, mmHg), kept
packed (one `array` of integers and a tuple of names) and decoded into small objects when a
command needs a drug.

The library is a data file deployed with the firmware (`druglib.json`); its version and the
SHA-256 of its bytes are reported in HELLO so a host can tell exactly which limits the pump
enforces. Reading and checking the file is boot-only work and lives in `pumpcore.libload`
(dropped after boot on MicroPython); `DrugLibrary.load(path)` calls it. When a sidecar
`druglib.json.sha256` is deployed next to the file, the file must match it. Any error —
unreadable, not JSON, a limit missing or out of order, a hash mismatch — raises
`LibraryError`; the pump then stays in FAULT and refuses to infuse (never runs on defaults).
"""
from array import array

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

NAME_MAX = 24    # bytes in a drug name: STATUS carries it and must stay within 160 bytes


class LibraryError(Exception):
    pass


class Limits:
    """hard_min ≤ soft_min ≤ value ≤ soft_max ≤ hard_max, all integers in wire units."""

    def __init__(self, hard_min, soft_min, soft_max, hard_max):
        self.hard_min = hard_min
        self.soft_min = soft_min
        self.soft_max = soft_max
        self.hard_max = hard_max

    def hard(self, v):
        return v < self.hard_min or v > self.hard_max

    def soft(self, v):
        return v < self.soft_min or v > self.soft_max


class Vitals:
    """Vital-sign limits for the interlock (mmHg, /min, %)."""

    def __init__(self, sbp_max, dbp_max, hr_max, hr_min, spo2_min):
        self.sbp_max = sbp_max
        self.dbp_max = dbp_max
        self.hr_max = hr_max
        self.hr_min = hr_min
        self.spo2_min = spo2_min

    def violated(self, sbp, dbp, hr, spo2):
        """Name of the first limit the reading breaks (bytes), or None."""
        if sbp > self.sbp_max:
            return b"sbp"
        if dbp > self.dbp_max:
            return b"dbp"
        if hr > self.hr_max or hr < self.hr_min:
            return b"hr"
        if spo2 < self.spo2_min:
            return b"spo2"
        return None


class Drug:
    """One drug's entry, as `DrugLibrary.drug(i)` decodes it (pumpcore.libload builds them
    while it checks the file). Limits: dose (µg/kg, a dose or a load), over (ms), weight (g),
    dose_h (µg/kg/h, optional); rate_max µL/h; vitals: the drug's own limits or the
    library's default (None: no interlock limits)."""

    def __init__(self):
        self.name = b""
        self.conc_ug_ml = 0
        self.concs = ()  # type: tuple
        self.dose = None  # type: Limits | None
        self.over = None  # type: Limits | None
        self.weight = None  # type: Limits | None
        self.dose_h = None  # type: Limits | None
        self.rate_max = 0            # µL/h
        self.bolus_max_nl = 0
        self.bolus_lockout_ms = 0    # least time between two bolus starts (0: none)
        self.bolus_h_ug = 0          # most bolus drug in any 60 min (0: no cap)
        self.kvo_ul_h = 0
        self.vitals = None  # type: Vitals | None


# The packed form (`DrugLibrary.rec`, an array of int32): the library's default vital-sign
# limits (5 integers, sbp_max 0 = none), then one record of _REC integers per drug at these
# offsets. A set of limits is hard_min, soft_min, soft_max, hard_max (hard_min -1: absent,
# dose_h only); a drug's vitals are its own or the default. `pack()` writes it at boot,
# `drug()`, `vitals()` and the accessors read it: this is the layout's one home.
_NV = const(5)
_CONC = const(0)        # default concentration, µg/mL
_NCONC = const(1)       # how many concentrations (1..4), then the 4 slots:
_CONCS = const(2)
_DOSE = const(6)        # µg/kg (a dose or a load)
_OVER = const(10)       # ms
_WEIGHT = const(14)     # g
_DOSE_H = const(18)     # µg/kg/h (optional)
_RATE_MAX = const(22)   # µL/h
_BOLUS_MAX = const(23)  # nL
_LOCKOUT = const(24)    # ms
_BOLUS_H = const(25)    # µg in any 60 min
_KVO = const(26)        # µL/h
_VITALS = const(27)     # sbp_max, dbp_max, hr_max, hr_min, spo2_min
_REC = const(32)


class DrugLibrary:
    version = b""
    names = ()  # type: tuple
    rec = array("i")    # the packed records (pack())
    sha256 = b""        # the file's SHA-256 in hex: set by libload.parse, dropped by load once
                        # checked against the sidecar
    sha256_16 = b""     # its first 16 digits, upper case (HELLO libh)

    @classmethod
    def load(cls, path):
        """Load and check a library file (see pumpcore.libload)."""
        from pumpcore import libload
        return libload.load(path)

    def moved(self):
        """The same library in freshly allocated objects. The boot calls it once the loader's
        json tree is collected: packed while that tree was alive, the library's few objects
        sit scattered through the hole the tree leaves, and the heap then has no large free
        block there (emulated RP2040 heap maps, docs/performance.md, issue 13)."""
        c = DrugLibrary()
        c.version = self.version[:]
        c.sha256_16 = self.sha256_16[:]
        c.names = tuple([n[:] for n in self.names])
        c.rec = array("i", self.rec)
        return c

    def pack(self, vitals_default, drugs):
        """Keep checked `Drug`s (and the default `Vitals`, or None) in the packed form."""
        def lim(o, x):
            if x is None:
                r[o] = -1
            else:
                r[o], r[o + 1], r[o + 2], r[o + 3] = x.hard_min, x.soft_min, x.soft_max, x.hard_max

        def vit(o, v):
            if v is not None:
                r[o], r[o + 1], r[o + 2] = v.sbp_max, v.dbp_max, v.hr_max
                r[o + 3], r[o + 4] = v.hr_min, v.spo2_min
        self.names = tuple([g.name for g in drugs])
        r = array("i", [0] * (_NV + _REC * len(drugs)))
        vit(0, vitals_default)
        for i in range(len(drugs)):
            g = drugs[i]
            o = _NV + i * _REC
            r[o + _CONC] = g.conc_ug_ml
            r[o + _NCONC] = len(g.concs)
            for j in range(len(g.concs)):
                r[o + _CONCS + j] = g.concs[j]
            lim(o + _DOSE, g.dose)
            lim(o + _OVER, g.over)
            lim(o + _WEIGHT, g.weight)
            lim(o + _DOSE_H, g.dose_h)
            r[o + _RATE_MAX] = g.rate_max
            r[o + _BOLUS_MAX] = g.bolus_max_nl
            r[o + _LOCKOUT] = g.bolus_lockout_ms
            r[o + _BOLUS_H] = g.bolus_h_ug
            r[o + _KVO] = g.kvo_ul_h
            vit(o + _VITALS, g.vitals)
        self.rec = r

    def index_of(self, frame, k):
        """Index of the drug named by field token k of a parsed frame, or -1."""
        names = self.names
        for i in range(len(names)):
            if frame.value_is(k, names[i]):
                return i
        return -1

    def rate_max(self, i):
        """Drug i's hard maximum rate, µL/h (no allocation)."""
        return self.rec[_NV + i * _REC + _RATE_MAX]

    def kvo_max(self, i):
        """Drug i's KVO rate, the most a program may keep the vein open with, µL/h."""
        return self.rec[_NV + i * _REC + _KVO]

    def _limits(self, o):
        r = self.rec
        return None if r[o] < 0 else Limits(r[o], r[o + 1], r[o + 2], r[o + 3])

    def vitals(self, i):
        """Drug i's vital-sign limits (i = -1: the library's default), or None."""
        r = self.rec
        o = 0 if i < 0 else _NV + i * _REC + _VITALS
        return None if r[o] == 0 else Vitals(r[o], r[o + 1], r[o + 2], r[o + 3], r[o + 4])

    def drug(self, i):
        """Drug i decoded from its record (allocates: for commands, never the tick)."""
        r = self.rec
        o = _NV + i * _REC
        d = Drug()
        d.name = self.names[i]
        d.conc_ug_ml = r[o + _CONC]
        d.concs = tuple(r[o + _CONCS:o + _CONCS + r[o + _NCONC]])
        d.dose = self._limits(o + _DOSE)
        d.over = self._limits(o + _OVER)
        d.weight = self._limits(o + _WEIGHT)
        d.dose_h = self._limits(o + _DOSE_H)
        d.rate_max = r[o + _RATE_MAX]
        d.bolus_max_nl = r[o + _BOLUS_MAX]
        d.bolus_lockout_ms = r[o + _LOCKOUT]
        d.bolus_h_ug = r[o + _BOLUS_H]
        d.kvo_ul_h = r[o + _KVO]
        d.vitals = self.vitals(i)
        return d

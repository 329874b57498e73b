"""The drug library the controller keeps: per-drug concentrations, soft/hard limits, bolus, KVO
and vital-sign limits, as small objects of integers in wire units (µg/kg, µg/kg/h, ms, g,
µL/h, nL, mmHg).

The library is a data file deployed with the firmware (`druglib.json`); its version and the
SHA-256 of its bytes are reported in HELLO so a host can tell exactly which limits the pump
enforces. Reading and checking the file is boot-only work and lives in `pumpcore.libload`
(dropped after boot on MicroPython); `DrugLibrary.load(path)` calls it. When a sidecar
`druglib.json.sha256` is deployed next to the file, the file must match it. Any error —
unreadable, not JSON, a limit missing or out of order, a hash mismatch — raises
`LibraryError`; the pump then stays in FAULT and refuses to infuse (never runs on defaults).
"""


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
    """One drug's entry (attributes set by pumpcore.libload). Limits: dose (µg/kg, a dose or
    a load), over (ms), weight (g), dose_h (µg/kg/h, optional); rate_max µL/h."""
    name = b""
    conc_ug_ml = 0
    concs = ()  # type: tuple
    dose = None  # type: Limits | None
    over = None  # type: Limits | None
    weight = None  # type: Limits | None
    dose_h = None  # type: Limits | None
    rate_max = 0            # µL/h
    bolus_max_nl = 0
    bolus_lockout_ms = 0    # least time between two bolus starts (0: none)
    bolus_h_ug = 0          # most bolus drug in any 60 min (0: no cap)
    kvo_ul_h = 0
    vitals = None  # type: Vitals | None


class DrugLibrary:
    version = b""
    vitals_default = None  # type: Vitals | None
    drugs = ()  # type: tuple
    sha256 = b""
    sha256_16 = b""

    @classmethod
    def load(cls, path):
        """Load and check a library file (see pumpcore.libload)."""
        from pumpcore import libload
        return libload.load(path)

    def index_of(self, frame, k):
        """Index of the drug named by field token k of a parsed frame, or -1."""
        drugs = self.drugs
        for i in range(len(drugs)):
            if frame.value_is(k, drugs[i].name):
                return i
        return -1

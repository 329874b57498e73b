"""The syringe models the pump knows: the one home of each model's nominal bore and
compliance on the pump side (docs/firmware.md, "Syringe model").

The rate loop (µsteps per nL and the take-up travel), the volume accounting and the occlusion
detector (the expected rise Q / C and the noise of a reading, force noise ÷ plunger area) are
planned from the model in use. The board's clamp reports the barrel size (`NL_PER_KSTEP`,
its calibration for the loaded syringe) and the pump starts with the nearest model; `CFG
syringe=NAME` sets the brand (a therapy-relevant setting: signed when auth is on, IDLE only).

Columns: name, bore (µm), compliance of syringe + line (nL/mmHg). Bores: BD Plastipak rows of
the pump makers' syringe tables; compliance: Snijder 2015 (0.009-0.021 mL/kPa on 50 mL,
mid 0.015), scaled with the stopper area, + 0.1 µL/mmHg of line. STIFF50 / SOFT50 are 50 mL
brands at the two ends of that range.
"""

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

NAMES = (b"BD10", b"BD20", b"BD50", b"STIFF50", b"SOFT50")
_BORE_UM = const((14500, 19130, 26600, 26600, 26600))
C_NL_MMHG = (694, 1134, 2100, 1300, 2900)
_DEFAULT = const(2)             # BD50
_LINE_NL_MMHG = const(100)
SIGMA_MN = 110                  # board force-sensor noise if the board does not say (mN, 1 σ)
LEAD_NM_PER_KSTEP = 390625      # board lead per 1000 µsteps if it does not say (1.25 mm / 3.2)
del const   # compile-time only (each module global is a slot of heap on the board)
_PA_PER_MMHG = 133.322


def area_mm2(i):
    b = _BORE_UM[i] / 1000.0
    return 3.14159265 * b * b / 4.0


def nl_per_kstep(i, lead_nm_per_kstep):
    """Nominal nL per 1000 µsteps of model i on this drive (config time: floats)."""
    return int(area_mm2(i) * lead_nm_per_kstep / 1000.0 + 0.5)


def sigma_cmmhg(i, sigma_mn):
    """σ of one pressure reading in 1/100 mmHg: the force noise over the plunger area."""
    return int(sigma_mn / 1000.0 / (area_mm2(i) * 1e-6 * _PA_PER_MMHG) * 100.0 + 0.5)


def nearest(nl_kstep, lead_nm_per_kstep):
    """The model whose nominal calibration is nearest the board's (the clamp's size)."""
    best = _DEFAULT
    err = 1 << 29
    for i in range(len(NAMES)):
        e = nl_per_kstep(i, lead_nm_per_kstep) - nl_kstep
        if e < 0:
            e = -e
        if e < err:
            err = e
            best = i
    return best


def find(name):
    for i in range(len(NAMES)):
        if NAMES[i] == name:
            return i
    return -1

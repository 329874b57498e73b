"""The occlusion plan is found by a bisection (REQ-RP2-07): the same segment length as a scan
of every length, in a bounded number of evaluations. The scan made up to 1,184 evaluations
at a low rate (each a dozen float objects on the RP2040's heap: ~380 KB of garbage in one
PROG tick, which in a small heap ran the GC past the 2-s watchdog, docs/performance.md)."""
import pytest

from pumpcore import occlusion as O


def _scan(rate, c, sig, joint=True):
    """The reference: the least L from T_MIN_S whose segment clears the test (else T_MAX_S)."""
    s = rate / 3.6 / c
    if s <= 0:
        s = 1e-6
    L = int(O.T_MIN_S / O.TICK_S)
    while L < int(O.T_MAX_S / O.TICK_S) and not O._clears(L, s, sig, joint):
        L += 1
    return L


def _scan_plan(rate, c, sig):
    """The plan's rule (docs/firmware.md, "Occlusion", 2.): each margin on its own, unless
    that plan is probed or shorter than a bedside step's response: then both jointly."""
    L = _scan(rate, c, sig, joint=False)
    s = rate / 3.6 / c if rate > 0 else 1e-6
    if O._band(s, sig, L)[2] or L < O._T_STEP_TICKS:
        L = _scan(rate, c, sig, joint=True)
    return L


_RATES = [0, 1, 50, 100, 500, 1000, 1500, 2500, 5000, 10000, 52500, 120000, 1200000]


@pytest.mark.req("REQ-RP2-07")
@pytest.mark.parametrize("rate", _RATES)
def test_plan_bisects_to_the_scans_length_in_at_most_two_bisections(rate, monkeypatch):
    real = O._clears
    calls = []

    def counting(L, s, sig, joint=True):
        calls.append(L)
        return real(L, s, sig, joint)

    for c in (800, 2100, 5200):
        for sig in (0.2, 1.1, 3.0):
            want = _scan_plan(rate, c, sig)
            monkeypatch.setattr(O, "_clears", counting)
            calls.clear()
            got = O.plan(rate, c, sig)[0]
            monkeypatch.setattr(O, "_clears", real)
            assert got == want
            assert len(calls) <= 22, (rate, c, sig, len(calls))   # at most two bisections
            monkeypatch.setattr(O, "_clears", counting)
            calls.clear()
            O.plan_ints(rate, c, int(sig * 100))        # + the levels' joint segment (or
                                                        # the probe's: plan_ints)
            monkeypatch.setattr(O, "_clears", real)
            assert len(calls) <= 33, (rate, c, sig, len(calls))


@pytest.mark.req("REQ-RP2-07")
def test_the_test_is_monotone_in_the_segment_length():
    """What the bisection relies on: false, then true, as L grows (every L, several plans)."""
    for rate in (1, 100, 1000, 5000, 52500):
        for c in (800, 2100, 5200):
            for sig in (0.2, 1.1, 3.0):
                s = rate / 3.6 / c
                for joint, w in ((True, 0.0), (False, 0.0), (True, 3.0)):
                    seq = [O._clears(L, s, sig, w if w else joint) for L in range(16, 1200)]
                    k = seq.index(True) if True in seq else len(seq)
                    assert all(seq[k:]) and not any(seq[:k])

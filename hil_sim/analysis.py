"""IEC 60601-2-24 flow-accuracy and occlusion analysis from the simulated gravimetric record.

This module owns the arithmetic of the standard's tests and nothing else: it reads a
`Record` (delivered volume sampled every second by the plant, the "balance") and returns
numbers; plots and reports are in `hil_sim.report`.

* **Start-up curve**: flow Q_i (mL/h) over consecutive sample intervals of ``period_s``
  (30 s in the standard) from the start of the infusion for ``duration_s`` (120 min).
* **Trumpet curve** (the second hour, T = 60..120 min): for each observation window of
  p = 2, 5, 11, 19, 31 min, P = p / 0.5 samples, every window start j = 1..(60/0.5 − P + 1):
  E_p(j) = (1/P) Σ_{i=j}^{j+P−1} 100 (Q_i − r)/r; E_p max and E_p min are the largest and
  smallest of them; A = the mean error over the whole hour.
* **Start-up time** (the `acc.startup_*` figure): the first time after which the 30-s flow
  samples of the start-up curve (IEC 60601-2-24 samples every 30 s) stay within ±10 % of the
  set rate to the end of the curve. The standard draws the curve and leaves the judgement to
  the reader; this is how the bench turns it into one number (`window=4` gives the 2-min
  average the bench used before issue 12, whose floor was its own first window, 120 s).
* **Occlusion**: time from the occlusion to the alarm; the *bolus* released when the
  occlusion is cleared = the volume delivered from the release until the line has relaxed
  (``settle_s``, ≫ the line's R·C), with the pump not restarted; the *physical detection
  limit* = the time a pressure rise of Q/C needs to clear 3 σ of the sensor noise.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

WINDOWS_MIN = (2, 5, 11, 19, 31)


def volume_at(t_s: list[float], vol: list[float], t: float) -> float:
    """Delivered volume at time t, linear between samples (0 before the first sample)."""
    if not t_s or t <= 0:
        return 0.0
    i = bisect.bisect_left(t_s, t)
    if i < len(t_s) and abs(t_s[i] - t) < 1e-9:
        return vol[i]
    if i == 0:
        return vol[0] * t / t_s[0]
    if i >= len(t_s):
        return vol[-1]
    t0, t1 = t_s[i - 1], t_s[i]
    return vol[i - 1] + (vol[i] - vol[i - 1]) * (t - t0) / (t1 - t0)


def flow_curve(record, t_start_s: float, period_s: float = 30.0,
               duration_s: float = 7200.0) -> tuple[list[float], list[float]]:
    """(t_i minutes after start at the end of each interval, Q_i in mL/h) for every whole
    interval the record covers."""
    t_s, vol = record.t_s, record.delivered_ml
    if not t_s:
        return [], []
    n = int(min(duration_s, t_s[-1] - t_start_s) // period_s + 1e-9)
    times, flows = [], []
    v_prev = volume_at(t_s, vol, t_start_s)
    for i in range(1, n + 1):
        t = t_start_s + i * period_s
        v = volume_at(t_s, vol, t)
        times.append(i * period_s / 60.0)
        flows.append((v - v_prev) * 3600.0 / period_s)
        v_prev = v
    return times, flows


@dataclass
class Trumpet:
    rate_ml_h: float
    windows_min: tuple[int, ...]
    ep_max: dict[int, float] = field(default_factory=dict)
    ep_min: dict[int, float] = field(default_factory=dict)
    overall_pct: float = 0.0

    def max_abs(self, p: int) -> float:
        return max(abs(self.ep_max[p]), abs(self.ep_min[p]))

    def as_dict(self) -> dict:
        return {"rate_ml_h": self.rate_ml_h, "overall_pct": self.overall_pct,
                "windows": {str(p): {"ep_max_pct": self.ep_max[p], "ep_min_pct": self.ep_min[p]}
                            for p in self.windows_min}}


def trumpet(flows: list[float], rate_ml_h: float, period_s: float = 30.0,
            windows_min: tuple[int, ...] = WINDOWS_MIN, first_sample: int | None = None,
            n_samples: int | None = None) -> Trumpet:
    """Trumpet curve over samples [first_sample, first_sample + n_samples) of a flow curve
    (default: the second hour)."""
    per_min = 60.0 / period_s
    i0 = int(60 * per_min) if first_sample is None else first_sample
    n = int(60 * per_min) if n_samples is None else n_samples
    q = flows[i0:i0 + n]
    if len(q) < n:
        raise ValueError(f"the record covers {len(flows)} samples; the trumpet needs {i0 + n}")
    err = [100.0 * (x - rate_ml_h) / rate_ml_h for x in q]
    tr = Trumpet(rate_ml_h, tuple(windows_min), overall_pct=sum(err) / len(err))
    for p in windows_min:
        P = int(round(p * per_min))
        sums = []
        s = sum(err[:P])
        sums.append(s)
        for j in range(1, len(err) - P + 1):
            s += err[j + P - 1] - err[j - 1]
            sums.append(s)
        tr.ep_max[p] = max(sums) / P
        tr.ep_min[p] = min(sums) / P
    return tr


def startup_time_s(flows: list[float], rate_ml_h: float, period_s: float = 30.0,
                   tol: float = 0.10, window: int = 1) -> float | None:
    """Time (s from the start) after which the ``window``-sample moving average of the flow
    (default: each 30-s sample) stays within ±tol of the rate to the end of the curve; None if
    it never settles."""
    if len(flows) < window:
        return None
    avg = [sum(flows[i - window + 1:i + 1]) / window for i in range(window - 1, len(flows))]
    last_bad = -1
    for j, a in enumerate(avg):
        if abs(a - rate_ml_h) > tol * rate_ml_h:
            last_bad = j
    if last_bad == len(avg) - 1:
        return None
    # avg[j] covers samples j..j+window-1, i.e. it ends at (j + window) · period
    return (last_bad + 1 + window) * period_s if last_bad >= 0 else window * period_s


def first_flow_s(record, t_start_s: float, threshold_ml: float = 0.001) -> float | None:
    """Time from the start until the balance has seen ``threshold_ml`` (1 µL by default)."""
    v0 = volume_at(record.t_s, record.delivered_ml, t_start_s)
    i = bisect.bisect_left(record.t_s, t_start_s)
    for t, v in zip(record.t_s[i:], record.delivered_ml[i:]):
        if v - v0 >= threshold_ml:
            return t - t_start_s
    return None


def bolus_ml(record, t_release_s: float, settle_s: float = 60.0) -> float:
    """Volume delivered from the release of an occlusion until ``settle_s`` later."""
    return (volume_at(record.t_s, record.delivered_ml, t_release_s + settle_s)
            - volume_at(record.t_s, record.delivered_ml, t_release_s))


def detection_limit_s(rate_ml_h: float, compliance_ml_per_mmhg: float,
                      noise_sigma_mmhg: float, k_sigma: float = 3.0) -> float:
    """Time for an occluded line's pressure rise Q/C·t to clear k σ of the sensor noise."""
    return k_sigma * noise_sigma_mmhg * compliance_ml_per_mmhg / (rate_ml_h / 3600.0)

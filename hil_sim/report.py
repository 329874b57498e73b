"""Reports of a scenario run: PNG plots (matplotlib), an HTML page and a JSON file.

`write_report(result, out_dir)` writes ``<name>.<runtime>.html``, ``.json`` and the plots:
volume and pressure vs time (fault windows shaded, the occlusion threshold drawn, the volume
axis scaled to what was delivered), the IEC 60601-2-24 start-up curve, the trumpet curve with
its ±2 % lines (when the run covers the second hour) and, with a patient, plasma level and
blood pressure / heart rate against the drug's interlock limits. The HTML page leads with a
key-figures table against PRODUCT.md's goals (bench/run.py GOALS) and folds the raw JSON
away.
"""
from __future__ import annotations

import html
import json
from pathlib import Path


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def fault_windows(res) -> list[tuple[str, float, float]]:
    """(fault, start s, end s) for every fault switched on in the scenario's timeline (the end
    is its switch-off, or the end of the run)."""
    out: list[tuple[str, float, float]] = []
    open_: dict[str, float] = {}
    for ev in sorted(res.scn.raw.get("events", []), key=lambda e: e["at_s"]):
        f = ev.get("fault")
        if f is None:
            continue
        on = ev.get("value", True)
        if on not in (False, 0, None) and f not in open_:
            open_[f] = float(ev["at_s"])
        elif on in (False, 0, None) and f in open_:
            out.append((f, open_.pop(f), float(ev["at_s"])))
    out.extend((f, t, res.sim_s) for f, t in open_.items())
    return out


OCCLUSION_FAULTS = ("occlusion", "occlusion_up", "resistance")


def plot_run(res, path: Path) -> Path:
    plt = _plt()
    rec = res.sim.record
    t_min = [t / 60 for t in rec.t_s]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a1.plot(t_min, rec.delivered_ml, label="delivered (gravimetric)")
    top = max(rec.delivered_ml, default=0.0)
    prog = res.metrics.get("programmed_ml")
    if prog is not None and prog <= 1.5 * max(top, 1e-9):
        a1.axhline(prog, color="grey", ls="--", lw=0.8, label=f"programmed {prog:g} mL")
        top = max(top, prog)
    elif prog is not None:           # far above what this run delivered: say it, keep the scale
        a1.text(0.01, 0.95, f"programmed {prog:g} mL (off scale)", transform=a1.transAxes,
                fontsize=8, va="top", color="grey")
    a1.set_ylim(0, max(top * 1.15, 1e-3))
    a1.set_ylabel("volume (mL)")
    a2.plot(t_min, rec.pressure_mmhg, color="tab:red", lw=0.7, label="line pressure")
    windows = fault_windows(res)
    for name, t0, t1 in windows:
        for ax in (a1, a2):
            ax.axvspan(t0 / 60, t1 / 60, color="tab:purple", alpha=0.10)
        a1.text((t0 + t1) / 120, 0.02, f"fault: {name}", transform=a1.get_xaxis_transform(),
                fontsize=7, ha="center", color="tab:purple")
    if any(n in OCCLUSION_FAULTS for n, _, _ in windows):
        thr = float((res.scn.raw.get("config") or {}).get("occl_mmhg", OCCL_MMHG_DEFAULT))
        a2.axhline(thr, color="black", ls="--", lw=0.8,
                   label=f"occlusion alarm limit {thr:g} mmHg (pump setting occl_mmhg)")
    a2.set_ylabel("pressure (mmHg)")
    a2.set_xlabel("virtual time (min)")
    for a in res.alarms:
        for ax in (a1, a2):
            ax.axvline(a["t_s"] / 60, color="tab:orange" if a["prio"] < 3 else "tab:red", lw=0.8, ls=":")
        a2.annotate(a["name"], (a["t_s"] / 60, a2.get_ylim()[1]), rotation=90, fontsize=7,
                    va="top", ha="right")
    a1.legend(loc="upper left")
    a2.legend(loc="upper left", fontsize=8)
    a1.set_title(f"{res.scenario} — {res.controller} on {res.runtime}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_startup(res, path: Path) -> Path | None:
    sc = res.metrics.get("startup_curve")
    if not sc or not sc["t_min"]:
        return None
    plt = _plt()
    rate = res.metrics["programmed_rate_ml_h"]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.step(sc["t_min"], sc["flow_ml_h"], where="post", lw=0.8, label="flow, 30-s samples")
    ax.axhline(rate, color="grey", ls="--", lw=0.8, label=f"set rate {rate:g} mL/h")
    ax.axhspan(rate * 0.9, rate * 1.1, color="grey", alpha=0.12, label="±10 %")
    if res.metrics.get("startup_s"):
        ax.axvline(res.metrics["startup_s"] / 60, color="tab:green", lw=0.8,
                   label=f"start-up {res.metrics['startup_s'] / 60:.1f} min")
    ax.set_xlabel("time from start (min)")
    ax.set_ylabel("flow (mL/h)")
    ax.set_title("Start-up curve (IEC 60601-2-24)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_trumpet(res, path: Path) -> Path | None:
    tr = res.metrics.get("trumpet")
    if not tr:
        return None
    plt = _plt()
    ps = [int(p) for p in tr["windows"]]
    emax = [tr["windows"][str(p)]["ep_max_pct"] for p in ps]
    emin = [tr["windows"][str(p)]["ep_min_pct"] for p in ps]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ps, emax, "o-", label="Ep max")
    ax.plot(ps, emin, "o-", label="Ep min")
    ax.axhline(tr["overall_pct"], color="grey", ls="--", lw=0.8, label=f"A = {tr['overall_pct']:.2f} %")
    ax.axhline(0, color="black", lw=0.5)
    for y in (2.0, -2.0):
        ax.axhline(y, color="tab:red", ls=":", lw=1, label="±2 % (goal)" if y > 0 else None)
    ax.set_xlabel("observation window (min)")
    ax.set_ylabel("flow error (%)")
    ax.set_title(f"Trumpet curve, second hour at {tr['rate_ml_h']:g} mL/h")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_patient(res, path: Path) -> Path | None:
    """Plasma level, and SBP/DBP/HR against the drug's interlock limits (a run with a
    patient)."""
    pr = getattr(res.sim, "patient_record", None)
    if pr is None or len(pr) < 2:
        return None
    plt = _plt()
    lim: dict = {}
    drug = (res.scn.raw.get("program") or {}).get("drug")
    if drug:
        from hil_sim.demo import _library_drug
        lim = (_library_drug(drug) or {}).get("vitals") or {}
    tm = [t / 60 for t in pr.t_s]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a1.plot(tm, pr.cp_ng_ml, color="tab:purple", label="plasma level (model)")
    a1.set_ylabel("plasma (ng/mL)")
    a1.legend(loc="upper left", fontsize=8)
    for series, colour, name, key in ((pr.sbp, "tab:red", "SBP", "sbp_max"),
                                      (pr.dbp, "tab:blue", "DBP", "dbp_max"),
                                      (pr.hr, "tab:gray", "HR", "hr_max")):
        a2.plot(tm, series, color=colour, label=name)
        if key in lim:
            a2.axhline(lim[key], color=colour, ls=":", lw=1, label=f"interlock {name} > {lim[key]}")
    for a in res.alarms:
        for ax in (a1, a2):
            ax.axvline(a["t_s"] / 60, color="tab:orange", lw=0.8, ls="--")
        a2.annotate(a["name"], (a["t_s"] / 60, 0.98), xycoords=("data", "axes fraction"),
                    rotation=90, fontsize=7, va="top", ha="right", color="tab:orange")
    a2.set_ylabel("mmHg, /min")
    a2.set_xlabel("virtual time (min)")
    a2.legend(loc="lower right", fontsize=7, ncol=2)
    a1.set_title(f"{res.scenario}: the patient")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


OCCL_MMHG_DEFAULT = 300


def key_figures(res) -> list[tuple[str, str, str, str]]:
    """(figure, value, PRODUCT.md goal, verdict) for the run's figures that have a goal."""
    m = res.metrics
    rows = []

    def add(name: str, value, goal: str, ok: bool | None) -> None:
        if value is None:
            return
        rows.append((name, f"{value:g}" if isinstance(value, (int, float)) else str(value),
                     goal, "-" if ok is None else ("meets" if ok else "MISSES")))
    if "error_pct" in m and not any(n in OCCLUSION_FAULTS for n, _, _ in fault_windows(res)):
        add("delivered vs programmed (%)", m["error_pct"], "|error| ≤ 0.5 (ketamine job)",
            abs(m["error_pct"]) <= 0.5)
    if "trumpet" in m:
        worst = max(abs(w[k]) for w in m["trumpet"]["windows"].values()
                    for k in ("ep_min_pct", "ep_max_pct"))
        w2 = m["trumpet"]["windows"].get("2", {})
        add("trumpet max |Ep| over 2-min windows (%)",
            max(abs(w2.get("ep_min_pct", 0)), abs(w2.get("ep_max_pct", 0))) if w2 else worst,
            "≤ 2", (max(abs(w2.get("ep_min_pct", 0)), abs(w2.get("ep_max_pct", 0))) if w2
                    else worst) <= 2)
    if m.get("startup_s") is not None:
        add("start-up time (s)", m["startup_s"], "≤ 60 at 1 mL/h", None)
    rate = m.get("programmed_rate_ml_h")
    for o in m.get("occlusion", []):
        goal, bound = {1.0: ("≤ 300", 300), 25.0: ("≤ 15", 15), 100.0: ("≤ 5", 5)}.get(
            rate, ("-", None))
        t = o["time_to_alarm_s"]
        add(f"occlusion at {o['t_s']:g} s: time to alarm (s)", t if t is not None else "never",
            goal, None if bound is None else (t is not None and t <= bound))
    if m.get("bolus_ml") is not None:
        add("bolus released when the occlusion cleared (mL)", m["bolus_ml"], "≤ 0.05",
            m["bolus_ml"] <= 0.05)
    if "patient" in m:
        add("plasma level at the end (ng/mL)", m["patient"]["cp_ng_ml"],
            "measured 100–250 (ketamine 0.5 mg/kg / 40 min)", None)
    add("speed (virtual s per wall s)", round(res.sim_s / res.wall_s, 1) if res.wall_s else None,
        "≥ 2000 cpython, ≥ 200 micropython (40-min job)", None)
    return rows


def write_report(res, out_dir: str | Path) -> dict[str, str]:
    """Write the JSON, the plots and the HTML page; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{res.scenario}.{res.controller if res.controller != 'firmware' else res.runtime}"
    files: dict[str, str] = {}
    js = out / f"{stem}.json"
    js.write_text(json.dumps(res.to_json(), indent=1, default=str))
    files["json"] = str(js)
    plots = []
    for kind, fn in (("run", plot_run), ("startup", plot_startup), ("trumpet", plot_trumpet),
                     ("patient", plot_patient)):
        p = fn(res, out / f"{stem}.{kind}.png")
        if p is not None:
            files[kind] = str(p)
            plots.append(p)
    files["html"] = str(_html(res, out / f"{stem}.html", plots))
    return files


def _html(res, path: Path, plots: list[Path]) -> Path:
    e = html.escape
    m = {k: v for k, v in res.metrics.items() if k != "startup_curve"}
    rows = "".join(f"<tr><td>{e(c.what)}</td><td class={'ok' if c.ok else 'bad'}>"
                   f"{'pass' if c.ok else 'FAIL'}</td><td>{e(c.detail)}</td></tr>" for c in res.checks)
    alarms = "".join(f"<tr><td>{a['t_s']:.1f}</td><td>{e(a['name'])}</td><td>{a['prio']}</td></tr>"
                     for a in res.alarms)
    log = "\n".join(f"{t:10.2f} {d:2} {e(x)}" for t, d, x in res.log[:5000])
    imgs = "".join(f'<p><img src="{e(p.name)}" style="max-width:100%"></p>' for p in plots)
    figs = "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td><td>{e(c)}</td>"
                   f"<td class={'bad' if d == 'MISSES' else 'ok'}>{e(d)}</td></tr>"
                   for a, b, c, d in key_figures(res))
    doc = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{e(res.scenario)} — InfuseKit simulator report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}
.ok{{color:green}} .bad{{color:#b00;font-weight:bold}} pre{{background:#f6f6f6;padding:8px;overflow:auto;max-height:40em}}</style>
</head><body>
<h1>{e(res.scenario)}: {'PASS' if res.passed else 'FAIL'}</h1>
<p>controller <b>{e(res.controller)}</b> ({e(res.fw_version)}) on <b>{e(res.runtime)}</b>;
{res.sim_s:.0f} s virtual in {res.wall_s:.2f} s wall.</p>
<p>{e(res.scn.meta.get('description', ''))}</p>
<h2>Key figures</h2><table><tr><th>figure</th><th>value</th><th>goal (PRODUCT.md)</th><th></th></tr>{figs}</table>
<h2>Expectations</h2><table>{rows}</table>
<h2>Alarms</h2><table><tr><th>t (s)</th><th>alarm</th><th>priority</th></tr>{alarms}</table>
<h2>Plots</h2>{imgs}
<details><summary>All figures (JSON)</summary><pre>{e(json.dumps(m, indent=1, default=str))}</pre></details>
<details><summary>Scenario file</summary><pre>{e(res.scn.text)}</pre></details>
<details><summary>Event log</summary><pre>{log}</pre></details>
</body></html>"""
    path.write_text(doc)
    return path

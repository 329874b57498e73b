"""Reports of a scenario run: PNG plots (matplotlib), an HTML page and a JSON file.

`write_report(result, out_dir)` writes ``<name>.<runtime>.html``, ``.json`` and the plots:
volume and pressure vs time, the IEC 60601-2-24 start-up curve, the trumpet curve (when the
run covers the second hour) and, with a patient, plasma level and blood pressure.
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


def plot_run(res, path: Path) -> Path:
    plt = _plt()
    rec = res.sim.record
    t_min = [t / 60 for t in rec.t_s]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a1.plot(t_min, rec.delivered_ml, label="delivered (gravimetric)")
    if "programmed_ml" in res.metrics:
        a1.axhline(res.metrics["programmed_ml"], color="grey", ls="--", lw=0.8, label="programmed")
    a1.set_ylabel("volume (mL)")
    a2.plot(t_min, rec.pressure_mmhg, color="tab:red", lw=0.7, label="line pressure")
    a2.set_ylabel("pressure (mmHg)")
    a2.set_xlabel("virtual time (min)")
    for a in res.alarms:
        for ax in (a1, a2):
            ax.axvline(a["t_s"] / 60, color="tab:orange" if a["prio"] < 3 else "tab:red", lw=0.8, ls=":")
        a2.annotate(a["name"], (a["t_s"] / 60, a2.get_ylim()[1]), rotation=90, fontsize=7,
                    va="top", ha="right")
    a1.legend(loc="upper left")
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
    ax.set_xlabel("observation window (min)")
    ax.set_ylabel("flow error (%)")
    ax.set_title(f"Trumpet curve, second hour at {tr['rate_ml_h']:g} mL/h")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
    for kind, fn in (("run", plot_run), ("startup", plot_startup), ("trumpet", plot_trumpet)):
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
    doc = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{e(res.scenario)} — InfuseKit simulator report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}
.ok{{color:green}} .bad{{color:#b00;font-weight:bold}} pre{{background:#f6f6f6;padding:8px;overflow:auto;max-height:40em}}</style>
</head><body>
<h1>{e(res.scenario)}: {'PASS' if res.passed else 'FAIL'}</h1>
<p>controller <b>{e(res.controller)}</b> ({e(res.fw_version)}) on <b>{e(res.runtime)}</b>;
{res.sim_s:.0f} s virtual in {res.wall_s:.2f} s wall.</p>
<p>{e(res.scn.meta.get('description', ''))}</p>
<h2>Expectations</h2><table>{rows}</table>
<h2>Alarms</h2><table><tr><th>t (s)</th><th>alarm</th><th>priority</th></tr>{alarms}</table>
<h2>Figures</h2><pre>{e(json.dumps(m, indent=1, default=str))}</pre>
<h2>Plots</h2>{imgs}
<h2>Scenario</h2><pre>{e(res.scn.text)}</pre>
<h2>Event log</h2><pre>{log}</pre>
</body></html>"""
    path.write_text(doc)
    return path

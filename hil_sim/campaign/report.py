"""The campaign's HTML page: the per-hazard table, the runs per fault, the failing runs, and
histograms of the key figures over the campaign (time to alarm per fault, released bolus,
delivery error of the runs where nothing went wrong), drawn with matplotlib and embedded."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any


def _hist(values: list[float], title: str, xlabel: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=90)
    if values:
        ax.hist(values, bins=min(40, max(5, len(values) // 5)), color="#4472c4")
    else:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{title} (n = {len(values)})", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("runs")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def figures(res: dict[str, Any]) -> dict[str, list[float]]:
    """Key figures over the campaign: time to alarm per fault, bolus, delivery error."""
    out: dict[str, list[float]] = {"bolus_ml": [], "delivery_error_pct": []}
    for r in res["runs"]:
        f = r.get("figures", {})
        if "time_to_alarm_s" in f:
            out.setdefault(f"time_to_alarm_s:{r['fault']}", []).append(f["time_to_alarm_s"])
        for k in ("bolus_ml", "delivery_error_pct"):
            if k in f:
                out[k].append(f[k])
    return out


def write_html(res: dict[str, Any], path: str | Path) -> str:
    from hil_sim.campaign.drive import table
    e = html.escape
    figs = figures(res)
    imgs = [_hist(figs["delivery_error_pct"], "delivery error, runs without a fault", "% of programmed"),
            _hist(figs["bolus_ml"], "bolus released when an occlusion opens", "mL")]
    for k in sorted(figs):
        if k.startswith("time_to_alarm_s:"):
            imgs.append(_hist(figs[k], f"time to alarm: {k.split(':', 1)[1]}", "s after the fault"))
    rows = "".join(f"<tr><td>{e(k)}</td><td>{v['runs']}</td><td>{v['failed']}</td><td>{v['false_alarm']}</td></tr>"
                   for k, v in res["by_fault"].items())
    fails = "".join(
        f"<tr><td>{r['index']}</td><td>{r['seed']}</td><td>{e(r['fault'])}</td><td>{e(', '.join(r['hazards']))}</td>"
        f"<td>{e('; '.join(d for h, d in r['findings'] if h != 'false_alarm'))}</td>"
        f"<td>{e(r.get('scenario_file', ''))}</td></tr>"
        for r in res["runs"] if r["failed"])
    md = table(res)
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>campaign {e(res['campaign'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%}}img{{margin:4px}}</style></head><body>
<h1>Campaign {e(res['campaign'])}</h1>
<p>{e(res['description'])}</p>
<p>seed {res['seed']}, {len(res['runs'])} runs, engine {e(res['engine'])} × {res['workers']} workers,
{res['wall_s']} s wall ({res['runs_per_s']} runs/s), {res['sim_h']} h of virtual time; load {res['host']['load_1min']} on {res['host']['cpus']} CPUs.</p>
<h2>Hazards</h2><pre>{e(md)}</pre>
<h2>Runs per fault</h2><table><tr><th>fault</th><th>runs</th><th>failed</th><th>with a false alarm</th></tr>{rows}</table>
<h2>Key figures</h2>{''.join(imgs)}
<h2>Failing runs</h2><table><tr><th>index</th><th>seed</th><th>fault</th><th>hazards</th><th>findings</th><th>replay file</th></tr>{fails or '<tr><td colspan=6>none</td></tr>'}</table>
</body></html>"""
    Path(path).write_text(body)
    return str(path)

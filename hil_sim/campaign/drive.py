"""A whole campaign: draw N runs, execute them on an engine, summarise, write the outputs.

`run_campaign(...)` is what ``infusekit sim campaign`` and ``make campaign`` call. Outputs in
``out`` (when given): ``result.json`` (the campaign, every run with its index, seed, outcome
and digest, the per-hazard summary), ``report.html`` (hil_sim.campaign.report) and
``failing/<name>.toml``, one stand-alone scenario per failing run that ``infusekit sim run``
replays to the same failure.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil_sim.campaign import engines, runner
from hil_sim.campaign.spec import CampaignSpec, load


def run_campaign(spec: str | Path | CampaignSpec, *, runs: int | None = None, seed: int | None = None,
                 workers: int = 1, engine: str = "local", scheduler: str | None = None,
                 out: str | Path | None = None, firmware_dir: str | None = None,
                 progress: Callable[[int, int, int], None] | None = None,
                 chunk: int | None = None) -> dict[str, Any]:
    """Run a campaign and return its result (see module doc). ``progress(done, total,
    failed)`` is called after every finished run."""
    sp = spec if isinstance(spec, CampaignSpec) else load(spec)
    n = int(runs if runs is not None else sp.campaign.runs)
    s = int(seed if seed is not None else sp.campaign.seed)
    if n < 1:
        raise ValueError("runs must be >= 1")
    spec_d = sp.model_dump()
    fw = str(Path(firmware_dir).resolve()) if firmware_dir else os.environ.get("INFUSEKIT_FIRMWARE") or None
    results: list[dict] = []
    failed = 0
    w0 = time.perf_counter()
    for r in engines.execute(spec_d, s, list(range(n)), engine=engine, workers=workers,
                             scheduler=scheduler, firmware_dir=fw, chunk=chunk):
        results.append(r)
        failed += int(r["failed"])
        if progress is not None:
            progress(len(results), n, failed)
    wall = time.perf_counter() - w0
    results.sort(key=lambda r: r["index"])
    summary = runner.summarise(results)
    res: dict[str, Any] = {
        "campaign": sp.campaign.name, "description": sp.campaign.description, "seed": s,
        "runs_requested": n, "engine": engine, "workers": workers, "scheduler": scheduler,
        "firmware_dir": fw, "wall_s": round(wall, 2), "runs_per_s": round(n / wall, 3) if wall else None,
        "sim_h": round(sum(r.get("sim_s") or 0 for r in results) / 3600.0, 2),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                 "load_1min": round(os.getloadavg()[0], 2)},
        "hazards": summary["hazards"], "by_fault": summary["by_fault"],
        "failed": summary["failed"], "runs": results,
    }
    if out is not None:
        write_outputs(res, sp, Path(out))
    return res


def write_outputs(res: dict[str, Any], sp: CampaignSpec, out: Path) -> dict[str, str]:
    """result.json, report.html and failing/*.toml in ``out``."""
    from hil_sim.campaign.report import write_html
    out.mkdir(parents=True, exist_ok=True)
    fail_dir = out / "failing"
    files: dict[str, str] = {}
    written = []
    for r in res["runs"]:
        if r["failed"]:
            fail_dir.mkdir(exist_ok=True)
            p = fail_dir / f"{res['campaign']}-{res['seed']}-{r['index']}.toml"
            p.write_text(runner.scenario_toml(sp, res["seed"], r["index"]))
            r["scenario_file"] = str(p)
            written.append(str(p))
    (out / "result.json").write_text(json.dumps(res, indent=1, default=str))
    files["json"] = str(out / "result.json")
    files["html"] = write_html(res, out / "report.html")
    files["failing"] = str(fail_dir) if written else ""
    return files


def table(res: dict[str, Any]) -> str:
    """The per-hazard summary as a Markdown table."""
    n = len(res["runs"])
    rows = ["| hazard (oracle check) | hazards.md | runs failing | of | 95 % upper bound (Clopper–Pearson) | requirements |",
            "|---|---|---:|---:|---:|---|"]
    for h, v in res["hazards"].items():
        name = "false alarm (counted apart)" if h == "false_alarm" else h
        rows.append(f"| {name} | {v['hazard']} | {v['count']} | {n} | {v['upper95']:.2e} | "
                    f"{', '.join(v['requirements'])} |")
    return "\n".join(rows)


def cmd_campaign(spec: str, *, runs: int | None = None, seed: int | None = None, workers: int | None = None,
                 engine: str = "local", scheduler: str | None = None, out: str | None = None,
                 as_json: bool = False, firmware_dir: str | None = None) -> int:
    """``infusekit sim campaign``: run, print the summary (or one JSON object), write the
    outputs. Exit 0 when no run failed, 1 when some did, 2 for a bad spec or arguments."""
    import sys

    from hil_sim.campaign.spec import SpecError
    try:
        sp = load(spec)
    except (FileNotFoundError, SpecError) as e:
        print(f"infusekit sim campaign: {e}", file=sys.stderr)
        return 2
    if workers is None:
        workers = os.cpu_count() or 1
    n = runs if runs is not None else sp.campaign.runs
    if n < 1 or workers < 1:
        print("infusekit sim campaign: --runs and --workers must be >= 1", file=sys.stderr)
        return 2
    out = out or f"out/campaign-{sp.campaign.name}"
    bar = None
    if not as_json and sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        bar = Progress(TextColumn("campaign"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[failed]} failing"), TimeRemainingColumn(), transient=True)
        task = bar.add_task("runs", total=n, failed=0)
        bar.start()

        def progress(done, total, failed):
            bar.update(task, completed=done, failed=failed)
    else:
        step = max(1, n // 20)

        def progress(done, total, failed):
            if not as_json and (done % step == 0 or done == total):
                print(f"  {done}/{total} runs, {failed} failing", file=sys.stderr, flush=True)
    try:
        res = run_campaign(sp, runs=n, seed=seed, workers=workers, engine=engine, scheduler=scheduler,
                           out=out, firmware_dir=firmware_dir, progress=progress)
    except ValueError as e:
        print(f"infusekit sim campaign: {e}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.stop()
    if as_json:
        print(json.dumps({k: v for k, v in res.items()}, default=str))
    else:
        print(f"campaign {res['campaign']}: {len(res['runs'])} runs, seed {res['seed']}, engine "
              f"{engine} x {workers}, {res['wall_s']} s ({res['runs_per_s']} runs/s), "
              f"{res['sim_h']} h virtual")
        print(table(res))
        print(f"failing runs: {res['failed']}" + (f" (replayable scenarios in {out}/failing/)" if res["failed"] else ""))
        print(f"result: {out}/result.json, {out}/report.html")
    return 1 if res["failed"] else 0

"""Campaign throughput: `campaign.runs_per_s` (one worker) and `campaign.scaling_2w` (two
workers ÷ one, same engine, same runs), with what the machine was doing meanwhile.

How it is measured, so that the figure is the campaign's and not the machine's:

* **Same engine, warm.** Both figures use the local engine's own process pool
  (`hil_sim.campaign.engines.local_pool`, spawn): a pool of 1 and a pool of 2 processes, each
  worker started, its imports done, the firmware imported and one run made *before* any
  clock starts (the pool's initializer). Only runs are timed.
* **Same runs, big enough tasks.** The same ``RUNS`` runs of the `smoke` spec (seed 7,
  indices 100…) each time, submitted as tasks of ``CHUNK`` runs (the per-task cost —
  pickling the spec, the result, the pool's queue — is then well under 1 % of a task), in
  index order, results checked identical between 1 and 2 workers.
* **Interleaved, repeated, median.** ``REPS`` rounds, each timing the 1-worker and the
  2-worker pool back to back (the order alternating round by round), so slow drifts of the
  machine's load fall on both; ``scaling_2w`` is the median of the rounds' paired ratios,
  ``runs_per_s`` the median 1-worker throughput.
* **Parallel for real.** Every task reports its worker's pid, its CPU seconds and its wall
  interval: ``cpu_share_2w`` (cores the two workers got together, 2.0 = both), the CPU
  seconds per run with 1 and with 2 workers (equal when the work itself parallelises), the
  per-worker split and ``overlap_2w`` (the share of the 2-worker wall time in which both
  workers were running a task at once) show whether a low figure is the engine or the load.
* **The load** (1-minute load average) at every measurement, min and max.

Re-run alone: ``.venv/bin/python bench/run.py --only campaign`` (see docs/performance.md).
"""
from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import wait

RUNS = int(os.environ.get("BENCH_CAMPAIGN_RUNS", "96"))
REPS = int(os.environ.get("BENCH_CAMPAIGN_REPS", "5"))
CHUNK = int(os.environ.get("BENCH_CAMPAIGN_CHUNK", "2"))
SEED = 7


def _timed_chunk(spec: dict, seed: int, indices: list[int]) -> tuple[list[str], dict]:
    """The engine's task (`run_chunk`), with the worker's pid, CPU seconds and wall span."""
    from hil_sim.campaign.engines import run_chunk
    t0, c0 = time.time(), time.process_time()
    out = run_chunk(spec, seed, indices, None)
    return [r["digest"] for r in out], {"pid": os.getpid(), "cpu": time.process_time() - c0,
                                        "t0": t0, "t1": time.time()}


def _pid(hold_s: float, own_session: bool) -> int:
    if own_session:
        try:
            os.setsid()             # a scheduler group of its own (Linux autogroup)
        except OSError:
            pass                    # already its own session leader
    time.sleep(hold_s)
    return os.getpid()


def _ready(ex, workers: int, own_session: bool) -> None:
    """Until every worker has finished its initializer (a task runs only after it) and, with
    ``own_session``, has become a session of its own."""
    seen: set[int] = set()
    while len(seen) < workers:
        seen |= {f.result() for f in [ex.submit(_pid, 0.2, own_session)
                                      for _ in range(workers)]}


def _overlap(spans: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Share of [t0, t1] during which at least two spans were open."""
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    both, open_, last = 0.0, 0, t0
    for t, d in edges:
        if open_ >= 2:
            both += t - last
        open_ += d
        last = t
    return both / (t1 - t0) if t1 > t0 else 0.0


def _measure(ex, spec: dict, parts: list[list[int]]) -> dict:
    load = os.getloadavg()[0]
    t0 = time.time()
    futs = [ex.submit(_timed_chunk, spec, SEED, p) for p in parts]
    wait(futs)
    t1 = time.time()
    done = [f.result() for f in futs]
    stats = [s for _, s in done]
    per_pid: dict[int, float] = {}
    for s in stats:
        per_pid[s["pid"]] = per_pid.get(s["pid"], 0.0) + s["cpu"]
    return {"wall": t1 - t0, "cpu": sum(s["cpu"] for s in stats), "per_pid": per_pid,
            "overlap": _overlap([(s["t0"], s["t1"]) for s in stats], t0, t1),
            "digests": [d for ds, _ in done for d in ds], "load": load}


def bench_campaign(own_sessions: bool = False, prefix: str = "campaign.") -> dict:
    from hil_sim.campaign.engines import local_pool
    from hil_sim.campaign.spec import load
    spec = load("smoke").model_dump()
    idx = list(range(100, 100 + RUNS))
    parts = [idx[i:i + CHUNK] for i in range(0, len(idx), CHUNK)]
    t_start = time.perf_counter()
    rounds: list[tuple[dict, dict]] = []
    with local_pool(1, warm=(spec, SEED)) as one, local_pool(2, warm=(spec, SEED)) as two:
        _ready(one, 1, own_sessions)
        _ready(two, 2, own_sessions)
        for r in range(REPS):
            if r % 2 == 0:
                m1 = _measure(one, spec, parts)
                m2 = _measure(two, spec, parts)
            else:
                m2 = _measure(two, spec, parts)
                m1 = _measure(one, spec, parts)
            assert m1["digests"] == m2["digests"], "per-run results differ between 1 and 2 workers"
            rounds.append((m1, m2))
    med = statistics.median
    ratios = [a["wall"] / b["wall"] for a, b in rounds]
    loads = [m["load"] for pair in rounds for m in pair]
    w1 = med(a["wall"] for a, _ in rounds)
    w2 = med(b["wall"] for _, b in rounds)
    split = [sorted(b["per_pid"].values()) for _, b in rounds]
    res = {
        "campaign.runs_per_s": round(RUNS / w1, 3),
        "campaign.runs_per_s_2w": round(RUNS / w2, 3),
        "campaign.scaling_2w": round(med(ratios), 3),
        "campaign.scaling_2w_rounds": [round(x, 3) for x in ratios],
        "campaign.bench_runs": RUNS,
        "campaign.bench_reps": REPS,
        "campaign.bench_chunk": CHUNK,
        "campaign.bench_wall_s": round(time.perf_counter() - t_start, 1),
        # cores the runs got (1.0 = a whole core; 2.0 = both cores for the two workers)
        "campaign.cpu_share_1w": round(med(a["cpu"] / a["wall"] for a, _ in rounds), 2),
        "campaign.cpu_share_2w": round(med(b["cpu"] / b["wall"] for _, b in rounds), 2),
        # equal when the work itself parallelises (no lock, no shared resource)
        "campaign.cpu_s_per_run_1w": round(med(a["cpu"] for a, _ in rounds) / RUNS, 4),
        "campaign.cpu_s_per_run_2w": round(med(b["cpu"] for _, b in rounds) / RUNS, 4),
        # each of the two workers' CPU seconds in the median round (both ~half: load balanced)
        "campaign.cpu_s_per_worker_2w": [round(x, 2) for x in split[len(split) // 2]],
        # share of the 2-worker wall time with both workers inside a task at once
        "campaign.overlap_2w": round(med(b["overlap"] for _, b in rounds), 3),
        "campaign.load_1min": round(max(loads), 2),
        "campaign.load_1min_min": round(min(loads), 2),
        "campaign.cpus": os.cpu_count(),
        "campaign.bench_worker_sessions": "own" if own_sessions else "shared",
    }
    return {prefix + k[len("campaign."):]: v for k, v in res.items()}


def bench_campaign_own_sessions() -> dict:
    """The same measurement with every worker in a session of its own. Linux's autogroup
    scheduler (``/proc/sys/kernel/sched_autogroup_enabled``) shares the CPU between
    *sessions*: on a machine loaded by other sessions, all the processes of one session get
    one session's share, so the 2-worker pool gets no more CPU than the 1-worker pool
    (`campaign.cpu_share_2w` ≈ `cpu_share_1w`) whatever the engine does. Here each worker
    competes like any other job; on a quiet machine both measurements are the same."""
    return bench_campaign(own_sessions=True, prefix="campaign.own_sessions.")


BENCHMARKS = {"campaign": bench_campaign, "campaign_own_sessions": bench_campaign_own_sessions}

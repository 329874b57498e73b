"""Campaign throughput: `campaign.runs_per_s` (one worker) and `campaign.scaling_2w` (two
workers ÷ one, same engine, same runs), with the load the machine carried while measuring.

Both figures use the local engine's process pool (spawn) with warm workers, so pool start-up
(amortised over any real campaign) is not in the figure; the same runs of the `smoke` spec
(seed 7) are timed on a pool of 1 and of 2 processes. The CPU share each measurement got
(the workers' CPU seconds on the runs ÷ wall seconds) is reported beside it, and the CPU seconds
per run with 1 and 2 workers: on a machine shared with other jobs
a scaling below 2 is mostly that share, not the campaign.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, wait

RUNS = int(os.environ.get("BENCH_CAMPAIGN_RUNS", "48"))


def _warm(_):
    from hil_sim.campaign import runner  # noqa: F401  (imports done before the clock starts)
    return os.getpid()


def _cpu_chunk(spec: dict, seed: int, indices: list[int]) -> tuple[list[dict], float]:
    """run_chunk, with the CPU seconds this worker spent on it."""
    from hil_sim.campaign.engines import run_chunk
    c = time.process_time()
    out = run_chunk(spec, seed, indices, None)
    return out, time.process_time() - c


def _timed(workers: int, spec: dict, indices: list[int]) -> tuple[float, float, list[str]]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        wait([ex.submit(_warm, i) for i in range(workers * 2)])
        wait([ex.submit(_cpu_chunk, spec, 7, [i]) for i in range(workers)])   # warm the code
        t0 = time.perf_counter()
        futs = [ex.submit(_cpu_chunk, spec, 7, [i]) for i in indices]
        done = [f.result() for f in futs]
        wall = time.perf_counter() - t0
    digests = [r["digest"] for rs, _ in done for r in rs]
    return wall, sum(c for _, c in done), digests


def bench_campaign() -> dict:
    from hil_sim.campaign.spec import load
    spec = load("smoke").model_dump()
    idx = list(range(100, 100 + RUNS))
    load0 = os.getloadavg()[0]
    w1, cpu1, d1 = _timed(1, spec, idx)
    w2, cpu2, d2 = _timed(2, spec, idx)
    load1 = os.getloadavg()[0]
    assert d1 == d2, "per-run results differ between 1 and 2 workers"
    return {
        "campaign.runs_per_s": round(RUNS / w1, 3),
        "campaign.runs_per_s_2w": round(RUNS / w2, 3),
        "campaign.scaling_2w": round(w1 / w2, 3),
        "campaign.bench_runs": RUNS,
        "campaign.cpu_share_1w": round(cpu1 / w1, 2),     # cores the runs got (1.0 = a whole core)
        "campaign.cpu_share_2w": round(cpu2 / w2, 2),     # ... with 2 workers (2.0 = both cores)
        "campaign.cpu_s_per_run_1w": round(cpu1 / RUNS, 4),   # equal: the work itself parallelises
        "campaign.cpu_s_per_run_2w": round(cpu2 / RUNS, 4),
        "campaign.load_1min": round(max(load0, load1), 2),
        "campaign.cpus": os.cpu_count(),
    }


BENCHMARKS = {"campaign": bench_campaign}

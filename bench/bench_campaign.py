"""Campaign throughput: `campaign.runs_per_s` (one worker) and `campaign.scaling_2w` (two
workers ÷ one, same engine, same runs), with the load the machine carried while measuring.

Both figures use the local engine's process pool (spawn) with warm workers, so pool start-up
(amortised over any real campaign) is not in the figure; the same runs of the `smoke` spec
(seed 7) are timed on a pool of 1 and of 2 processes. The CPU share each measurement got
(child CPU seconds ÷ wall seconds) is reported beside it: on a machine shared with other jobs
a scaling below 2 is mostly that share, not the campaign.
"""
from __future__ import annotations

import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor, wait

RUNS = int(os.environ.get("BENCH_CAMPAIGN_RUNS", "48"))


def _warm(_):
    from hil_sim.campaign import runner  # noqa: F401  (imports done before the clock starts)
    return os.getpid()


def _timed(workers: int, spec: dict, indices: list[int]) -> tuple[float, float, list[str]]:
    from hil_sim.campaign.engines import run_chunk
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        wait([ex.submit(_warm, i) for i in range(workers * 2)])
        wait([ex.submit(run_chunk, spec, 7, [i], None) for i in range(workers)])   # warm the code
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        futs = [ex.submit(run_chunk, spec, 7, [i], None) for i in indices]
        digests = [r["digest"] for f in futs for r in f.result()]
        wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # children's CPU is only counted once they are reaped (after the with block)
    cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    return wall, cpu, digests


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
        "campaign.cpu_share_1w": round(cpu1 / w1, 2),     # of one core (1.0 = a whole core)
        "campaign.cpu_share_2w": round(cpu2 / w2, 2),     # of two cores (2.0 = both)
        "campaign.load_1min": round(max(load0, load1), 2),
        "campaign.cpus": os.cpu_count(),
    }


BENCHMARKS = {"campaign": bench_campaign}

"""Where a campaign's runs execute: a local process pool, a Dask cluster, or Ray.

Every engine maps the same pure function (`runner.run_one`) over run indices and yields each
result as it finishes; the caller sorts by index, so the result never depends on the engine,
the worker count or the order of completion.

* ``local``: `concurrent.futures.ProcessPoolExecutor` with K processes (K = 1: in this process).
* ``dask``: `dask.distributed.Client` on ``scheduler`` (an address), or on a `LocalCluster` of K
  single-threaded worker processes when none is given.
* ``ray``: `ray.init(address=scheduler)` on an existing cluster, or a local one with K CPUs;
  one task per chunk of runs (`ray.remote`).

Runs go in chunks (several runs per task) so the per-task overhead of Dask and Ray stays small
against a run's ~0.1-1 s.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

ENGINES = ("local", "dask", "ray")


def _chunks(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def run_chunk(spec: dict, seed: int, indices: list[int], firmware_dir: str | None) -> list[dict]:
    """Run several indices in one task (what a worker executes)."""
    from hil_sim.campaign.runner import run_one
    return [run_one(spec, seed, i, firmware_dir) for i in indices]


def _chunk_size(n: int, workers: int) -> int:
    return max(1, min(16, n // max(1, workers * 8)))


def execute(spec: dict, seed: int, indices: list[int], *, engine: str = "local", workers: int = 1,
            scheduler: str | None = None, firmware_dir: str | None = None,
            chunk: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield the result of every run index (in completion order)."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: one of {ENGINES}")
    workers = max(1, int(workers))
    size = chunk or _chunk_size(len(indices), workers)
    parts = _chunks(list(indices), size)
    runner: Callable[..., Iterator[list[dict]]] = {"local": _local, "dask": _dask, "ray": _ray}[engine]
    for results in runner(spec, seed, parts, workers, scheduler, firmware_dir):
        yield from results


def local_pool(workers: int, warm: tuple[dict, int] | None = None):
    """The local engine's process pool: ``workers`` spawned processes (a clean interpreter
    each, no state inherited from the caller, as on a cluster). ``warm=(spec, seed)`` makes
    every worker import the runner and the firmware and run one run of ``spec`` as it starts,
    so a caller that times the pool (bench/bench_campaign.py) times runs, not start-up."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                               initializer=_warm_worker if warm else None,
                               initargs=warm or ())


def _warm_worker(spec: dict, seed: int) -> None:
    run_chunk(spec, seed, [0], None)


def _local(spec, seed, parts, workers, scheduler, firmware_dir):
    if scheduler:
        raise ValueError("--scheduler needs --engine dask or ray")
    if workers == 1:
        for p in parts:
            yield run_chunk(spec, seed, p, firmware_dir)
        return
    from concurrent.futures import as_completed
    with local_pool(workers) as ex:
        futs = [ex.submit(run_chunk, spec, seed, p, firmware_dir) for p in parts]
        for f in as_completed(futs):
            yield f.result()


def _dask(spec, seed, parts, workers, scheduler, firmware_dir):
    from dask.distributed import Client, LocalCluster, as_completed
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
    try:
        spec_f = client.scatter(spec, broadcast=True)
        futs = [client.submit(run_chunk, spec_f, seed, p, firmware_dir, pure=False) for p in parts]
        for f in as_completed(futs):
            yield f.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _ray(spec, seed, parts, workers, scheduler, firmware_dir):
    import ray
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
        if scheduler:
            ray.init(address=scheduler, **kw)
        else:
            # the workers import hil_sim from this checkout
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env = {"env_vars": {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}}
            # Ray gives its raylet a fixed 30 s to register with the GCS; on a machine loaded
            # far beyond its cores that start-up can take longer: try again (a clean start)
            for attempt in range(3):
                try:
                    ray.init(num_cpus=workers, runtime_env=env, **kw)
                    break
                except Exception as e:          # noqa: BLE001 - Ray raises a bare Exception
                    ray.shutdown()
                    if attempt == 2 or "timed out during startup" not in str(e):
                        raise
        started = True
    try:
        task = ray.remote(num_cpus=1)(run_chunk)
        spec_ref = ray.put(spec)
        pending = [task.remote(spec_ref, seed, p, firmware_dir) for p in parts]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for d in done:
                yield ray.get(d)
    finally:
        if started:
            ray.shutdown()

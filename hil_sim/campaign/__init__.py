"""Randomised fault campaigns (statistical model checking) over the simulator.

``spec`` (the TOML schema), ``draw`` (one run from spec + seed + index), ``oracle`` (the safety
verdict of a run), ``runner`` (one run; the per-hazard summary), ``stats`` (Clopper–Pearson),
``engines`` (local pool, Dask, Ray), ``drive`` (a whole campaign and its outputs),
``report`` (the HTML page). docs/simulator.md, "Campaigns", describes them.
"""
from hil_sim.campaign.drive import run_campaign

__all__ = ["run_campaign"]

"""``infusekit sim campaign``: the thin click command over `hil_sim.campaign.drive.cmd_campaign`
(registered on the ``sim`` group by `hil_sim.cli.register`)."""
from __future__ import annotations

import click

from host.clikit import command


def register(sim: click.Group) -> None:
    @command(sim, "campaign", help=(
        "Draw N scenarios from the distributions of a campaign spec (hil_sim/campaigns/), run "
        "each with its own seed on a local process pool, Dask or Ray, judge every run with the "
        "safety oracle, print per-hazard counts with 95 % Clopper-Pearson upper bounds and write "
        "result.json, report.html and every failing run as a replayable scenario into --out. "
        "Exit 0 when no run failed, 1 when some did, 2 for a bad spec."),
        short_help="a randomised fault campaign judged by the safety oracle")
    @click.argument("spec")
    @click.option("--runs", type=click.IntRange(min=1), default=None, help="number of runs (default: the spec's)")
    @click.option("--seed", type=int, default=None, help="campaign seed (default: the spec's)")
    @click.option("--workers", type=click.IntRange(min=1), default=None,
                  help="worker processes (default: the CPU count)")
    @click.option("--engine", type=click.Choice(["local", "dask", "ray"]), default="local",
                  show_default=True, help="local process pool, dask.distributed or Ray")
    @click.option("--scheduler", default=None, metavar="ADDR",
                  help="an existing Dask scheduler (tcp://host:8786) or Ray cluster address")
    @click.option("--out", default=None, metavar="DIR", help="output folder (default out/campaign-NAME)")
    def campaign_cmd(args) -> int:
        from hil_sim.campaign.drive import cmd_campaign
        return cmd_campaign(args.spec, runs=args.runs, seed=args.seed, workers=args.workers,
                            engine=args.engine, scheduler=args.scheduler, out=args.out,
                            as_json=bool(getattr(args, "json", False)))

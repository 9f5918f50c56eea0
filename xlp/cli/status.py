"""`xlp status`: a run's progress from its folder alone, or a submitted job's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from xlp.cli.app import app, con, load
from xlp.errors import XlpError


@app.command()
def status(
    target: Optional[str] = typer.Argument(None, help="A run folder or URI (s3://...), or the spec that names it."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (with --watch, one line per look)."),
    watch: Optional[float] = typer.Option(None, "--watch", metavar="SECONDS",
                                          help="Look again every SECONDS until no driver runs the folder."),
    job: Optional[str] = typer.Option(None, "--job", help="A job id from `xlp launch --submit`."),
    address: Optional[str] = typer.Option(None, help="The cluster's dashboard address, for --job."),
) -> None:
    """Progress per stage (done / running / pending / failed, rows/s, ETA), per node, and errors.

    Reads the run folder alone, so it works from any machine that sees it, also after the cluster is gone.

    Example: xlp status runs/quickstart --watch 5
    """
    import time

    from rich.console import Group
    from rich.live import Live

    from xlp.run.status import run_status

    if job:
        from xlp.run.submit import job_status

        js = job_status(job, address)
        if as_json:
            print(json.dumps(js))
        else:
            con.out.print(f"job {job}: {js['status']}" + (f" ({js['message']})" if js["message"] else ""))
            for line in js["log_tail"]:
                con.out.print(f"  {line}", highlight=False, markup=False)
        if target is None:
            return
    if target is None:
        raise XlpError("give a run folder or spec (or --job ID)")
    run = load(Path(target)).spec.output if "://" not in target and Path(target).is_file() else target

    def looks():  # the run's status now, then with --watch every `watch` seconds while a driver runs
        st = run_status(run)
        yield st
        while watch and st["driver"]["running"]:
            time.sleep(watch)
            st = run_status(run)
            yield st

    if as_json or not (watch and con.out.is_terminal):  # not a live screen: every look printed in full
        for st in looks():
            if as_json:
                print(json.dumps(st), flush=True)
            else:
                con.out.print(Group(*_status_view(run, st)))
        return
    with Live(console=con.out, auto_refresh=False) as live:
        for st in looks():
            live.update(Group(*_status_view(run, st)), refresh=True)


def _status_view(run: str, st: dict) -> list:
    t = Table(title=f"xlp status: {run}", caption=st["driver"]["detail"])
    for col in ("stage", "total", "done", "running", "pending", "failed", "rows/s", "ETA"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for stage, row in st["stages"].items():
        eta = "" if row["eta_s"] is None else _duration(row["eta_s"])
        t.add_row(stage, *(str(row[k]) for k in ("total", "done", "running", "pending", "failed", "rows_per_s")), eta)
    view: list = [t]
    if st["nodes"]:
        n = Table(title="done per node")
        for col in ("node", "ray node", "stage", "units", "rows", "worker s"):
            n.add_column(col, justify="right" if col in ("units", "rows", "worker s") else "left")
        for r in st["nodes"]:
            n.add_row(r["node"], r["ray_node"], r["stage"], str(r["units"]), f"{r['rows']:,}", f"{r['seconds']:,.1f}")
        view.append(n)
    for stage, row in st["stages"].items():
        view += [f"[yellow]running[/] {stage} {key}" for key in row["running_units"][:10]]
    for stage, row in st["stages"].items():
        view += [f"[red]failed[/] {stage} {key}: {error}" for key, error in list(row["errors"].items())[:10]]
    return view


def _duration(seconds: float) -> str:
    """3725 -> '1:02:05'; a day or more -> '2d 03:04:05'."""
    days, rest = divmod(round(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}d {h:02d}:{m:02d}:{s:02d}" if days else f"{h}:{m:02d}:{s:02d}"

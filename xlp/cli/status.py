"""`xlp status`: a run's progress from its folder alone, or a submitted job's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from xlp.cli.app import app, con, load
from xlp.errors import XlpError

JOB_LOOK_TRIES = 5  # with --job --watch: looks in a row that may fail before the watch gives up


@app.command()
def status(
    target: Optional[str] = typer.Argument(None, help="A run folder or URI (s3://...), or the spec that names it."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (with --watch, one line per look)."),
    watch: Optional[float] = typer.Option(None, "--watch", metavar="SECONDS",
                                          help="Look again every SECONDS until no driver runs the folder "
                                               "(with --job: until the job has ended; exit with its driver's code)."),
    start_timeout: float = typer.Option(600, "--start-timeout", metavar="SECONDS",
                                        help="With --watch: how long to wait for the folder's driver to start "
                                             "(no plan.json yet) before giving up."),
    job: Optional[str] = typer.Option(None, "--job", help="A job id from `xlp launch --submit`."),
    address: Optional[str] = typer.Option(None, help="The cluster's dashboard address, for --job."),
) -> None:
    """Progress per stage (done / running / pending / failed, rows/s, ETA), per node, and errors.

    Reads the run folder alone, so it works from any machine that sees it, also after the cluster is gone.

    Example: xlp status runs/quickstart --watch 5
    """
    from rich.console import Group
    from rich.live import Live

    code = _job(job, address, watch, as_json) if job else 0
    if target is None:
        if job:
            raise typer.Exit(code)
        raise XlpError("give a run folder or spec (or --job ID)")
    run = load(Path(target)).spec.output if "://" not in target and Path(target).is_file() else target
    if job:  # the folder as the job left it
        watch = None
    looks = _looks(run, watch, start_timeout)
    if as_json or not (watch and con.out.is_terminal):  # not a live screen: every look printed in full
        for st in looks:
            if as_json:
                print(json.dumps(st), flush=True)
            else:
                con.out.print(Group(*_status_view(run, st)))
    else:
        with Live(console=con.out, auto_refresh=False) as live:
            for st in looks:
                live.update(Group(*_status_view(run, st)), refresh=True)
    if code:
        raise typer.Exit(code)


def _looks(run: str, watch: float | None, start_timeout: float):
    """The run's status now, then with --watch every `watch` seconds while a driver runs; with --watch, a
    folder not launched yet is waited for (up to `start_timeout` seconds) instead of failing."""
    from xlp.run.status import NotLaunched, run_status

    deadline, said = time.monotonic() + start_timeout, False
    while True:
        try:
            st = run_status(run)
            break
        except NotLaunched as e:
            left = deadline - time.monotonic()
            if not watch or left <= 0:
                raise NotLaunched(f"{e} (waited {start_timeout:g} s)" if watch else str(e)) from None
            if not said:
                con.err.print(f"{run}: not launched yet (no plan.json); waiting up to {start_timeout:g} s "
                          f"for its driver to start", highlight=False, soft_wrap=True)
                said = True
            time.sleep(min(watch, left))
    yield st
    while watch and st["driver"]["running"]:
        time.sleep(watch)
        st = run_status(run)
        yield st


def _job(job: str, address: str | None, watch: float | None, as_json: bool) -> int:
    """Print a submitted job's status and the tail of its log; with --watch, first follow it (a line per
    change) until it has ended, and answer its driver's exit code."""
    from xlp.run.submit import JOB_ENDED, job_exit_code, job_status

    js, said = job_status(job, address), None
    while watch and js["status"] not in JOB_ENDED:
        if as_json:
            print(json.dumps(js), flush=True)
        elif js["status"] != said:
            con.out.print(f"job {job}: {js['status']}", highlight=False)
            said = js["status"]
        for tries_left in reversed(range(JOB_LOOK_TRIES)):  # a head busy for a moment does not end the watch
            time.sleep(watch)
            try:
                js = job_status(job, address)
                break
            except XlpError as e:
                if not tries_left:
                    raise
                con.err.print(f"{e} (trying again in {watch:g} s)", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(js), flush=True)
    else:
        lines = (js["message"] or "").splitlines()  # Ray repeats the log's tail (shown below) in the message
        why = lines[0].split(", last available logs")[0] if lines else ""
        ended = f", driver exit code {js['exit_code']}" if js.get("exit_code") is not None else ""
        con.out.print(f"job {job}: {js['status']}{ended}" + (f" ({why})" if why else ""), highlight=False,
                     soft_wrap=True)
        for line in js["log_tail"]:
            con.out.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    return job_exit_code(js) if watch and js["status"] in JOB_ENDED else 0


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

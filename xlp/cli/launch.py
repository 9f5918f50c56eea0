"""`xlp launch` and `xlp validate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from xlp.cli.app import app, con, load
from xlp.errors import XlpError


@app.command()
def launch(
    spec: Path = typer.Argument(..., help="The experiment spec (YAML)."),
    address: Optional[str] = typer.Option(None, help="Ray address; overrides the spec and RAY_ADDRESS."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines on stdout: one per finished unit, then a summary."),
    verify: bool = typer.Option(False, "--verify", help="Check every finished output against its SHA-256 in the "
                                "ledger (reads them all) and redo those that changed."),
    submit: bool = typer.Option(False, "--submit", help="Run the driver on the cluster as a Ray Job (--address "
                                "http://HEAD:8265); prints the job id for `xlp status --job`."),
) -> None:
    """Validate SPEC, run extraction and probes on Ray, reduce, and write results and a report.

    Resumable: a relaunch redoes only what is missing.  Example: xlp launch examples/quickstart.yaml
    """
    from xlp.run.driver import launch as run_launch

    run = load(spec)
    s = run.spec
    if submit:
        from xlp.run.submit import submit as submit_job

        job = submit_job(run, address, verify)
        if as_json:
            print(json.dumps({"event": "submitted", "job": job, "run": s.output}), flush=True)
        else:
            con.out.print(job)
            con.err.print(f"submitted: follow it with `xlp status --job {job} --address {address or '$RAY_ADDRESS'}` "
                      f"or `xlp status {s.output}`")
        return
    emit = (lambda event: print(json.dumps(event), flush=True)) if as_json else None
    result = run_launch(run, console=con.err, quiet=quiet or as_json, address=address, events=emit, verify=verify)
    if as_json:
        print(json.dumps({"event": "summary", **result.summary(s.output)}), flush=True)
    elif not quiet:
        con.err.print(f"[green]done[/] in {result.seconds:.1f}s: {result.extracted} shards extracted, "
                  f"{result.probed} probe units fit, {result.skipped} already done. "
                  f"Results in {s.output}/results, report at {s.output}/report/index.html")
        for note in result.no_subword:
            con.err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if result.failed:
        lines = "\n".join(f"  {k}: {v}" for k, v in list(result.failed.items())[:20])
        raise XlpError(f"{len(result.failed)} units failed (results hold everything else; relaunch to retry):\n{lines}")


@app.command()
def validate(
    spec: Path = typer.Argument(..., help="The experiment spec (YAML)."),
    schema_only: bool = typer.Option(False, "--schema-only",
                                     help="Check keys and types only (no data or checkpoints)."),
) -> None:
    """Check SPEC without running anything: keys, paths, splits, checkpoint configs; print the grid.

    Example: xlp validate examples/quickstart.yaml
    """
    if schema_only:  # keys and types, task options included: no data, no checkpoints, no torch
        load(spec)
        con.out.print(f"[green]{spec}: spec is valid[/] (schema only)")
        return
    from xlp.run.grid import describe

    grid = describe(load(spec))
    if grid.pending_pretrain:
        con.out.print(f"checkpoints: {grid.pending_pretrain}; run `xlp pretrain {spec}` to validate the grid "
                     "before launching")
        con.out.print("[green]spec and data are valid[/]")
        return
    t = Table(title=f"{spec}: grid")
    t.add_column("dimension")
    t.add_column("size", justify="right")
    t.add_column("values")
    for row in grid.rows:
        t.add_row(*row)
    con.out.print(t)
    for note in grid.notes:
        con.out.print(f"note: {note}")
    con.out.print("[green]spec is valid[/]")

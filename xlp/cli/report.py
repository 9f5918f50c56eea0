"""`xlp report` and `xlp compare`: results read back from run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from xlp.cli.app import app, con
from xlp.errors import XlpError


@app.command()
def report(
    run: str = typer.Argument(..., help="A run folder or URI (s3://...)."),
    recompute: bool = typer.Option(False, "--recompute", help="Reduce the probe outputs again even where the "
                                   "results tables are current."),
) -> None:
    """Write RUN's report: from its results tables where they are current (seconds), else after reducing the
    probe outputs on disk again (the results tables too).

    Example: xlp report runs/quickstart
    """
    from xlp.run.manifest import load_run
    from xlp.run.reduce import reduce_run, render_report
    from xlp.storage import Store

    store = Store(run)
    manifest, plan = load_run(store)
    if not reduce_run(store, manifest, plan, force=recompute):
        render_report(store, manifest, plan)
    con.out.print(f"report written to {run}/report/index.html and explore.html")


@app.command()
def compare(
    runs: list[str] = typer.Argument(..., help="Two run folders or URIs or more (pretraining seeds, model sizes)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write comparison.parquet, .csv and per_run.parquet here."),
) -> None:
    """The same curves across runs: in how many runs each emerged, the spread of its emergence step, its best
    checkpoints and degradation, with a sentence per task.

    Example: xlp compare runs/multiberts-seed_0 runs/multiberts-seed_1 runs/multiberts-seed_2 --out runs/compare
    """
    from xlp.analysis.compare import compare_curves, differing_settings, summary
    from xlp.run.runs import load_runs

    per_run, specs = load_runs(runs)
    for what in differing_settings(specs):
        con.err.print(f"[yellow]note:[/] the runs differ in {what}: their curves differ by that too", highlight=False)
    compared = compare_curves(per_run)
    if compared.empty:
        raise XlpError("compare: the runs share no curve (task, layer, source, target)")
    for line in summary(compared):
        con.out.print(line, highlight=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        compared.to_parquet(out / "comparison.parquet", index=False)
        compared.to_csv(out / "comparison.csv", index=False)
        per_run.to_parquet(out / "per_run.parquet", index=False)
        con.out.print(f"{len(compared)} curves compared across {per_run['run'].nunique()} runs: "
                     f"{out}/comparison.parquet")

"""xlp from a notebook or a script: `xlp.load(RUN)` gives a finished run's results as pandas tables, each with
its task's metric and direction attached, and `run.plot` draws the report's figures for any task, layer and
languages; `xlp.launch(SPEC)` and `xlp.validate(SPEC)` run and check a spec (a path, or a Spec built in code)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from xlp.analysis.curve_table import seed_curves
from xlp.analysis.results import Results
from xlp.config import Spec
from xlp.errors import XlpError
from xlp.run.manifest import Manifest, load_manifest, manifest, run_manifest
from xlp.storage import Store
from xlp.tasks import Task
from xlp.tasks.base import PER_ITEM_COLUMNS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from xlp.run.driver import LaunchResult
    from xlp.run.grid import GridReport

def _directed(table: pd.DataFrame, tasks: dict[str, Task]) -> pd.DataFrame:
    """The table with each row's `higher_is_better` (its task's direction) beside its metric."""
    if "task" not in table or table.empty:
        return table
    better = {name: t.higher_is_better for name, t in tasks.items()}
    return table.assign(higher_is_better=table["task"].map(better).fillna(True).astype(bool))


@dataclass
class Run:
    """A finished run, read from its folder (local or an object-store URI)."""
    location: str
    manifest: Manifest
    results: Results

    @property
    def spec(self) -> Spec:
        return self.manifest.spec

    @property
    def tasks(self) -> dict[str, Task]:
        return self.manifest.tasks.configured()

    @property
    def probes(self) -> pd.DataFrame:
        """Every probe row: one per (checkpoint, task, layer, source, target, seed)."""
        return _directed(self.results.probes.drop(columns=list(PER_ITEM_COLUMNS), errors="ignore"), self.tasks)

    @cached_property
    def curves(self) -> pd.DataFrame:
        """The learning curves: each (task, layer, source, target) per step, averaged over probe seeds, with the
        spread over seeds (`value_min`, `value_max`) and the baseline."""
        return _directed(seed_curves(self.results.probes), self.tasks)

    @property
    def emergence(self) -> pd.DataFrame:
        return _directed(self.results.emergence, self.tasks)

    @property
    def findings(self) -> pd.DataFrame:
        return self.results.findings

    @property
    def layers(self) -> pd.DataFrame:
        return _directed(self.results.layers, self.tasks)

    @property
    def plot(self) -> Plots:
        return Plots(self)


@dataclass
class Plots:
    """The report's figures for any task, layer and languages, as matplotlib figures."""
    run: Run

    def _style(self, langs: Sequence[str] | None):
        from xlp.report.figures import language_style

        style = language_style(self.run.spec.data.languages, self.run.results.probes)
        return style if langs is None else {lang: style[lang] for lang in langs if lang in style}

    def _rows(self, task: str) -> None:
        if task not in set(self.run.results.probes.get("task", ())):
            raise XlpError(f"{self.run.location}: no {task} curves (its tasks with rows: "
                           f"{', '.join(self.run.results.tasks)})")

    def _draw(self, plot, what: str) -> Figure:
        if plot is None:
            raise XlpError(f"{self.run.location}: no {what} to draw (no such rows in results/probes.parquet)")
        return plot.draw()

    def curves(self, task: str, layer: int | None = None, langs: Sequence[str] | None = None) -> Figure:
        """Each language's learning curve of `task` at `layer` (default: the last)."""
        from xlp.report.figures import curves

        self._rows(task)
        return self._draw(curves(self.run.results, task, self._style(langs), layer), f"{task} curves")

    def transfer(self, task: str, layer: int | None = None, langs: Sequence[str] | None = None) -> Figure:
        """The source x target grid of emergence steps of `task` at `layer` (default: the last)."""
        from xlp.report.figures import transfer

        self._rows(task)
        return self._draw(transfer(self.run.results, task, self._style(langs), layer), f"{task} transfer")

    def layers(self, task: str) -> Figure:
        """`task`'s mean value by layer and step."""
        from xlp.report.figures import layers

        self._rows(task)
        return self._draw(layers(self.run.results, task, self._style(None)), f"{task} layers")


def load(run: str | Path) -> Run:
    """A finished run's results (what `xlp launch` or `xlp report` wrote under RUN/results)."""
    from xlp.run.reduce import read_results

    store = Store(str(run))
    m = run_manifest(store)
    return Run(str(run), m, read_results(store, m))


def launch(spec: str | Path | Spec | Manifest, **options) -> LaunchResult:
    """Run (or resume) a spec, as `xlp launch` does; `options` as xlp.run.driver.launch takes them."""
    from xlp.run.driver import launch as run_launch

    run = load_manifest(spec) if isinstance(spec, (str, Path)) else manifest(spec)
    return run_launch(run, quiet=options.pop("quiet", True), **options)


def validate(spec: str | Path | Spec | Manifest) -> GridReport:
    """Check a spec without running anything, as `xlp validate` does: the grid it would run and its notes."""
    from xlp.run.grid import describe

    return describe(load_manifest(spec) if isinstance(spec, (str, Path)) else manifest(spec))

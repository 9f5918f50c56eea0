"""A run's probe rows to everything it reports: every number computed here, once (no store, no Ray)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from xlp.analysis.curve_table import CURVE_COLUMNS, best_layers, curve_analysis, pairwise_tasks
from xlp.analysis.findings import findings_table
from xlp.analysis.results import Results
from xlp.config import AnalysisSpec
from xlp.tasks.base import Task


def _notes(probes: pd.DataFrame, tasks: Mapping[str, Task]) -> list[str]:
    notes = []
    for name in tasks:
        rows = probes[probes["task"] == name]
        if rows.empty:
            notes.append(f"No probe results for task {name}; its figures and rows are skipped.")
        elif not (rows["step"] == 0).any():
            notes.append(f"{name}: the series has no step-0 checkpoint, so the curves show no "
                         "random-initialisation baseline.")
    return notes


def reduce(probes: pd.DataFrame, analysis: AnalysisSpec, tasks: Mapping[str, Task]) -> Results:
    """The curves' table, findings, best layers and the tasks' own tables of `probes` (a run's rows), with
    `tasks` the run's tasks by name (their metric's direction, item sums, definitions, own tables)."""
    curves = curve_analysis(probes, analysis, tasks)
    emergence = curves.table[CURVE_COLUMNS]
    extra: dict[str, tuple[str, pd.DataFrame]] = {}
    for task in tasks.values():
        extra.update(task.extra_tables(probes))
    present = list(dict.fromkeys(probes["task"]))
    return Results(probes=probes, emergence=emergence,
                   findings=findings_table(probes, curves, tasks, analysis.alpha),
                   layers=best_layers(probes, tasks), extra=extra,
                   tasks=(*[t for t in tasks if t in present], *[t for t in present if t not in tasks]),
                   definitions={name: task.definition for name, task in tasks.items()},
                   pairwise=frozenset(pairwise_tasks(tasks)), notes=tuple(_notes(probes, tasks)))

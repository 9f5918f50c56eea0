"""A run's probe rows to everything it reports: every number computed here, once (no store, no Ray)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from xlp.analysis.curve_table import CURVE_COLUMNS, MapParts, best_layers, curve_analysis
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


def _floor_notes(emergence: pd.DataFrame, analysis: AnalysisSpec) -> list[str]:
    """Where the bootstrap's resolution (its smallest p-value, 1 / (B + 1)) is what keeps BH from passing curves."""
    notes, floor = [], 1 / (analysis.bootstrap + 1)
    for task, g in emergence.groupby("task", sort=False):
        held = g[(g["emergence_p"] <= 2 * floor) & ~g["emerged"].astype(bool)]
        if len(held):
            need = int(np.ceil(len(g) / analysis.alpha))
            notes.append(f"{task}: {len(held)} curves have emergence p-values at the bootstrap's floor "
                         f"(1/{analysis.bootstrap + 1}) and BH over the task's {len(g)} curves does not pass them; "
                         f"analysis.bootstrap >= {need} would resolve them.")
    return notes


def reduce(probes: pd.DataFrame, analysis: AnalysisSpec, tasks: Mapping[str, Task],
           map_parts: MapParts | None = None) -> Results:
    """The curves' table, findings, best layers and the tasks' own tables of `probes` (a run's rows), with
    `tasks` the run's tasks by name (their metric's direction, item sums, definitions, own tables); `map_parts`
    runs the curves' parts (`curve_analysis`: here by default; the run layer passes Ray tasks, same results)."""
    curves = curve_analysis(probes, analysis, tasks, map_parts)
    emergence = curves.table[CURVE_COLUMNS]
    extra: dict[str, tuple[str, pd.DataFrame]] = {}
    for task in tasks.values():
        extra.update(task.extra_tables(probes))
    findings = findings_table(probes, curves, tasks, analysis.alpha, analysis.seed)
    tables = {"probes": probes, "emergence": emergence, "findings": findings, "layers": best_layers(probes, tasks)}
    return Results.of(tables, extra, tasks, notes=tuple(_notes(probes, tasks) + _floor_notes(emergence, analysis)))

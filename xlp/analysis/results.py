"""What a run reports, computed once (by `xlp.analysis.reduce.reduce`): its results tables and the few things
its report states that are not tables. The report renders these and computes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from xlp.analysis.curve_table import pairwise_tasks

if TYPE_CHECKING:
    from xlp.tasks import Task

LAYERS_TITLE = "best layer per checkpoint (in-language)"


@dataclass(frozen=True)
class Results:
    probes: pd.DataFrame  # every probe row (results/probes.parquet)
    emergence: pd.DataFrame  # one row per curve (analyse_curves)
    findings: pd.DataFrame  # claims (a)-(e), numbers and sentences (findings_table)
    layers: pd.DataFrame  # best layer per (task, language, step) (best_layers)
    extra: dict[str, tuple[str, pd.DataFrame]]  # the tasks' own tables: {file name: (title, table)}
    tasks: tuple[str, ...]  # the tasks with rows: the run's, in its order, then any others the rows have
    definitions: dict[str, str]  # the run's tasks: name -> what it measures
    pairwise: frozenset[str]  # tasks whose in-language values are trivial: their curves use the other languages
    notes: tuple[str, ...]  # what the rows lack (a task without results, a series without step 0)
    lower_is_better: frozenset[str] = frozenset()  # tasks whose metric is better lower (bpc)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The results tables by file name (results/<name>.parquet)."""
        own = {name: table for name, (_, table) in self.extra.items()}
        return {"probes": self.probes, "emergence": self.emergence, "findings": self.findings,
                "layers": self.layers, **own}

    def titled_tables(self) -> dict[str, tuple[str, pd.DataFrame]]:
        """The tables the report lists, by file name (results/<name>.parquet): (title, table), the best layers
        and the tasks' own."""
        return {"layers": (LAYERS_TITLE, self.layers), **self.extra}

    @classmethod
    def of(cls, tables: Mapping[str, pd.DataFrame], extra: dict[str, tuple[str, pd.DataFrame]],
           tasks: Mapping[str, Task], notes: tuple[str, ...] = ()) -> Results:
        """Results from its tables (probes, emergence, findings, layers) and the run's tasks by name, whose
        order, definitions and directions the report states."""
        present = list(dict.fromkeys(tables["probes"].get("task", pd.Series(dtype=str))))
        return cls(**tables, extra=extra,
                   tasks=(*[t for t in tasks if t in present], *[t for t in present if t not in tasks]),
                   definitions={name: task.definition for name, task in tasks.items()},
                   pairwise=frozenset(pairwise_tasks(tasks)), notes=notes,
                   lower_is_better=frozenset(name for name, task in tasks.items() if not task.higher_is_better))

"""Control tasks (Hewitt & Liang 2019): a word task's examples with labels that only memorising word types can
predict. Each word type (its lowercased form) gets one fixed label drawn from the empirical distribution of the
task's labels in the probe's training data (the source's training shard), by a keyed hash of the type, so the
same seed gives the same labels in every split, checkpoint and run. Selectivity = task - control, per curve:
a probe that scores high on both measures its own capacity rather than the representation."""

from __future__ import annotations

import copy
import hashlib
from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from xlp.tasks.base import TaskOptions, WordTask

if TYPE_CHECKING:  # the extraction actor imports the tasks, not pandas (half a second of its start)
    import pandas as pd

SELECTIVITY_KEYS = ["step", "layer", "src_lang", "tgt_lang"]


class ControlOptions(TaskOptions):
    seed: int = Field(0, description="keys the draw of each word type's control label: the same seed, the same labels")


def type_uniforms(forms: np.ndarray, seed: int) -> np.ndarray:
    """One number in [0, 1) per form, the same for every form of one type (lowercased), keyed by the seed."""
    types, inverse = np.unique(np.array([str(f).lower() for f in forms], dtype=object), return_inverse=True)
    key = seed.to_bytes(8, "little", signed=True)
    u = np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8, key=key).digest(), "little")
                  for t in types], dtype=np.float64) / 2.0 ** 64
    return u[inverse.reshape(-1)] if len(forms) else np.zeros(0)


class ControlTask(WordTask):
    """A control task of the word task named `controls`; its selectivity table is `selectivity_table`."""

    controls: ClassVar[str]
    selectivity_table: ClassVar[str]
    Options = ControlOptions
    _drawn_from: tuple[np.ndarray, np.ndarray] | None = None  # (outcomes, cumulative shares) of the training data

    @abstractmethod
    def outcomes(self, table: pa.Table) -> np.ndarray:
        """What the control draws from, one per training example of the table (labels, head offsets)."""

    def trained_on(self, train: pa.Table) -> ControlTask:
        """This control task with the distribution of `train`'s outcomes (the probe's training data)."""
        task = copy.copy(self)
        task._drawn_from = _distribution(self.outcomes(train))
        return task

    def draw(self, forms: np.ndarray, table: pa.Table) -> np.ndarray:
        """Each form's control outcome: its type's fixed draw from the training distribution (before
        `trained_on`, this table's own)."""
        values, cdf = self._drawn_from or _distribution(self.outcomes(table))
        at = np.searchsorted(cdf, type_uniforms(forms, self.options.seed), side="right")
        return values[np.minimum(at, len(values) - 1)]

    def extra_tables(self, probes: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame]]:
        """Selectivity: the controlled task's value minus this task's, per (step, layer, source, target), each
        averaged over seeds; nothing unless the controlled task ran too."""
        task = self.controls
        if task not in set(probes.get("task", ())):
            return {}
        both = probes[probes.task.isin([task, self.name])]
        mean = both.groupby(SELECTIVITY_KEYS + ["task"]).value.mean().unstack("task")
        out = mean.rename(columns={self.name: "control"}).rename_axis(columns=None).dropna().reset_index()
        out["selectivity"] = out[task] - out["control"]
        return {self.selectivity_table: (f"{task} selectivity ({task} minus {self.name}, Hewitt & Liang)",
                                         out[SELECTIVITY_KEYS + [task, "control", "selectivity"]])}


def _distribution(outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, counts = np.unique(outcomes, return_counts=True)
    if not len(values):
        raise ValueError("a control task needs training examples to draw its labels from")
    return values, np.cumsum(counts) / counts.sum()

"""A task defined outside xlp: probe a UD morphological feature (the FEATS column), e.g. Number.

Name it in a spec as `tasks: [pos, "ud_features:NumberTask"]` with this folder on PYTHONPATH, or
install it with an entry point in the group `xlp.tasks` (`number = ud_features:NumberTask`) and write
`tasks: [pos, number]`. xlp plans, hashes, runs, reduces and reports it like a built-in task; its
workers receive the class itself, so Ray worker nodes need not have this file.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from xlp.storage.features import layer_stack
from xlp.tasks.base import WordTask


def feature_values(feats: np.ndarray, feature: str) -> np.ndarray:
    """Each word's value of one feature ('' where the word does not have it), from `A=x|B=y` strings."""
    prefix = feature + "="
    out = []
    for f in feats:
        value = next((part[len(prefix):] for part in (f or "").split("|") if part.startswith(prefix)), "")
        out.append(value)
    return np.array(out)


class UdFeatureTask(WordTask):
    """One example per word that has the feature; the label is its value (words without it are left out)."""

    feature = "Number"
    name = "number"
    metric = "accuracy"
    needs = ("feats",)

    @property
    def definition(self) -> str:
        return (f"one example per word that has the UD feature {self.feature} (FEATS column); the label is "
                f"the value of the UD feature {self.feature}; accuracy; baseline = the target's majority value.")

    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        values = feature_values(table.column("feats").to_numpy(zero_copy_only=False), self.feature)
        keep = np.flatnonzero(values != "")
        return layer_stack(table, layer_columns)[:, keep], values[keep]


class NumberTask(UdFeatureTask):
    pass

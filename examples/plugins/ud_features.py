"""A task defined outside xlp, with an option: probe a UD morphological feature (the FEATS column).

Name it in a spec as `tasks: [pos, "ud_features:UdFeatureTask"]` with this folder on PYTHONPATH, and choose the
feature in its own section, under its name: `ud_feature: {feature: Case}` (default Number). Or install it with an
entry point in the group `xlp.tasks` (`ud_feature = ud_features:UdFeatureTask`) and write `tasks: [pos,
ud_feature]`. xlp validates its options with the spec, plans, hashes (a new feature is a new probe), runs,
reduces and reports it like a built-in task; its workers receive the class itself, so Ray worker nodes need not
have this file.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field

from xlp.storage.features import layer_stack
from xlp.tasks.base import TaskOptions, WordTask


def feature_values(feats: np.ndarray, feature: str) -> np.ndarray:
    """Each word's value of one feature ('' where the word does not have it), from `A=x|B=y` strings."""
    prefix = feature + "="
    out = []
    for f in feats:
        value = next((part[len(prefix):] for part in (f or "").split("|") if part.startswith(prefix)), "")
        out.append(value)
    return np.array(out)


class FeatureOptions(TaskOptions):
    feature: str = Field("Number", pattern=r"^[A-Z][A-Za-z]*(\[[a-z]+\])?$", description="a UD feature: Number, Case")


class UdFeatureTask(WordTask):
    """One example per word that has the feature; the label is its value (words without it are left out)."""

    name = "ud_feature"
    Options = FeatureOptions
    metric = "accuracy"
    needs = ("feats",)

    @property
    def definition(self) -> str:
        return (f"one example per word that has the UD feature {self.options.feature} (FEATS column); the label "
                f"is its value; accuracy; baseline = the target's majority value.")

    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        values = feature_values(table.column("feats").to_numpy(zero_copy_only=False), self.options.feature)
        keep = np.flatnonzero(values != "")
        return layer_stack(table, layer_columns)[:, keep], values[keep]


class NumberTask(UdFeatureTask):
    """Number alone, under its own name (the entry point `number` of the test's plugin package)."""

    name = "number"

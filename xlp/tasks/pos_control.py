"""Control task for POS (Hewitt & Liang 2019): every word type gets a fixed tag, drawn from the empirical UPOS
distribution of the probe's training words (xlp/tasks/control.py), so a probe can only memorise types."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from xlp.storage.features import layer_stack
from xlp.tasks.control import ControlTask
from xlp.tasks.pos import PosTask


class PosControlTask(ControlTask):
    name = "pos_control"
    metric = "accuracy"
    controls = PosTask.name
    selectivity_table = "selectivity"
    definition = ("Hewitt & Liang's control task: each word type (lowercased form) gets one fixed tag, drawn from the "
                  "UPOS distribution of the probe's training words by a hash of the type keyed by "
                  "`pos_control.seed`; accuracy; selectivity = pos accuracy - control accuracy.")
    needs = ("form", "upos")

    def outcomes(self, table: pa.Table) -> np.ndarray:
        return table.column("upos").to_numpy(zero_copy_only=False)

    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        forms = table.column("form").to_numpy(zero_copy_only=False)
        return layer_stack(table, layer_columns, None), self.draw(forms, table)

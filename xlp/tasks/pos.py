"""POS tagging: one example per word, its UPOS tag as the label."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


class PosTask:
    name = "pos"
    metric = "accuracy"
    needs = ("upos",)

    def examples(self, table: pa.Table, layer_column: str) -> tuple[np.ndarray, np.ndarray]:
        from xlp.storage.features import vectors

        return vectors(table, layer_column), table.column("upos").to_numpy(zero_copy_only=False)

"""POS tagging: one example per word, its UPOS tag as the label."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from xlp.storage.features import layer_stack
from xlp.tasks.base import WordTask


class PosTask(WordTask):
    name = "pos"
    metric = "accuracy"
    definition = "one example per word, its UPOS tag; accuracy; baseline = the target's majority tag."
    needs = ("upos",)

    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Features (L, n_words, d) of the given layer columns as stored (float16), and each word's UPOS tag."""
        return layer_stack(table, layer_columns, None), table.column("upos").to_numpy(zero_copy_only=False)

"""Dependency arc classification: given a gold arc, its universal relation (the part before ':')."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from xlp.probing.pairs import pair_features, sentence_rows
from xlp.tasks.base import WordTask


def universal_relations(table: pa.Table, rows: np.ndarray) -> np.ndarray:
    """The universal relation (before ':') of the given rows' words."""
    return np.array([r.split(":")[0] for r in table.column("deprel").to_numpy(zero_copy_only=False)[rows]])


class DeprelTask(WordTask):
    name = "deprel"
    metric = "accuracy"
    definition = ("a gold arc's universal relation (the label before ':') from the same pair features; accuracy; "
                  "baseline = the majority relation.")
    needs = ("sent_idx", "word_id", "head", "deprel")

    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        head_row, _, _ = sentence_rows(table)
        dep = np.flatnonzero(head_row >= 0)
        return pair_features(table, layer_columns, head_row[dep], dep), universal_relations(table, dep)

    def item_sentences(self, table: pa.Table) -> np.ndarray:
        """Each gold arc's sentence."""
        head_row, _, _ = sentence_rows(table)
        return table.column("sent_idx").to_numpy()[head_row >= 0]

"""Dependency arc prediction: is word a the head of word b? Gold arcs against an equal number of
non-arcs from the same sentence (sampled by the seed); metric balanced accuracy."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from xlp.tasks.pairs import arcs_and_non_arcs, pair_features


class ArcTask:
    name = "arc"
    metric = "balanced_accuracy"
    needs = ("sent_idx", "word_id", "head")
    seeded = True  # the sampled non-arcs depend on the seed

    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        heads, deps, labels = arcs_and_non_arcs(table, seed)
        return pair_features(table, layer_columns, heads, deps), labels

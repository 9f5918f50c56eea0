"""Token-pair examples from a feature shard: gold (head, dependent) arcs and sampled non-arcs.

A pair is represented as [h_head; h_dep; h_head * h_dep]: a linear score over a plain
concatenation cannot rank heads, since the dependent's half is the same for every candidate.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from xlp.storage.features import vectors


def sentence_rows(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row of each word's head or -1 for the root, sentence start row per row, sentence length per row)."""
    sent = table.column("sent_idx").to_numpy()
    word = table.column("word_id").to_numpy()
    head = table.column("head").to_numpy()
    start = np.arange(len(sent)) - (word - 1)
    head_row = np.where(head > 0, start + head - 1, -1)
    lengths = np.bincount(sent)[sent]
    return head_row, start, lengths


def pair_features(table: pa.Table, layer_columns: list[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(L, n_pairs, 3d) features of pairs of rows (a = head candidate, b = dependent)."""
    out = []
    for col in layer_columns:
        v = vectors(table, col)
        out.append(np.concatenate([v[a], v[b], v[a] * v[b]], axis=1))
    return np.stack(out)


def arcs_and_non_arcs(table: pa.Table, seed: int,
                      heads: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every gold arc, and for each one a non-arc with the same dependent and a random other word
    of its sentence as head (fixed by the seed). Returns (head rows, dependent rows, labels 0/1).
    `heads` (a head row per word, -1 for the root) puts other arcs in the gold ones' place (a control task's)."""
    head_row, start, lengths = sentence_rows(table)
    head_row = head_row if heads is None else heads
    dep = np.flatnonzero((head_row >= 0) & (lengths > 2))  # a non-arc needs a third word
    rng = np.random.default_rng(seed)
    # draw among the sentence's words other than the dependent and its head
    off = rng.integers(0, lengths[dep] - 2)
    pos_dep, pos_head = dep - start[dep], head_row[dep] - start[dep]
    lo, hi = np.minimum(pos_dep, pos_head), np.maximum(pos_dep, pos_head)
    off = off + (off >= lo)
    off = off + (off >= hi)
    neg_head = start[dep] + off
    heads = np.concatenate([head_row[dep], neg_head])
    deps = np.concatenate([dep, dep])
    labels = np.concatenate([np.ones(len(dep), dtype=np.int64), np.zeros(len(dep), dtype=np.int64)])
    return heads, deps, labels

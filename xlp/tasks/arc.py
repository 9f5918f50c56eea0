"""Dependency arc prediction: is word a the head of word b? Gold arcs against an equal number of
non-arcs from the same sentence (sampled by the seed); metric balanced accuracy. `arc_uas` uses the
same probe to select each dependent's head among all words of its sentence (UAS)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from xlp.probing.pairs import arcs_and_non_arcs, pair_features, sentence_rows
from xlp.storage.features import vectors
from xlp.tasks.base import WordTask


class ArcTask(WordTask):
    name = "arc"
    metric = "balanced_accuracy"
    definition = ("binary classification of word pairs as [h_head; h_dep; h_head * h_dep]: every gold "
                  "(head, dependent) arc against one non-arc per arc (same dependent, another word of its "
                  "sentence as head, drawn by the seed); balanced accuracy, chance 0.5.")
    needs = ("sent_idx", "word_id", "head")
    seeded = True  # the sampled non-arcs depend on the seed

    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        heads, deps, labels = arcs_and_non_arcs(table, seed)
        return pair_features(table, layer_columns, heads, deps), labels

    def item_sentences(self, table: pa.Table) -> np.ndarray:
        """Each example's sentence: its dependent's (an arc and its non-arc share one)."""
        return table.column("sent_idx").to_numpy()[arcs_and_non_arcs(table, 0)[1]]


class ArcHeadTask(ArcTask):
    """Head selection with the arc probe: trained as `arc` (gold arcs vs sampled non-arcs), then for
    every dependent whose head is a word, every other word of its sentence is scored as its head and
    the highest-scoring one is chosen; metric UAS over those dependents (the root is not scored)."""

    name = "arc_uas"
    metric = "uas"
    definition = ("head selection with the arc probe: for each dependent whose head is a word, every other word of the "
                  "sentence is scored as its head (arc-vs-non-arc margin) and the best chosen; UAS over those "
                  "dependents (the root is not scored); baseline = a uniformly random head.")
    fit_with = "arc"  # the same probe: with both tasks in a run it is fit once
    CHUNK = 1024  # candidate pairs scored at a time (L x CHUNK x 3d floats)

    def heads_to_find(self, table: pa.Table) -> np.ndarray:
        """Each word's head row, the one head selection is scored against (-1: not scored, the root): the gold
        tree's."""
        return sentence_rows(table)[0]

    def test_baseline(self, table: pa.Table) -> float:
        """Choosing a head uniformly among the other words of the sentence."""
        head_row, _, lengths = sentence_rows(table)
        dep = np.flatnonzero(head_row >= 0)
        return float(np.mean(1.0 / (lengths[dep] - 1))) if len(dep) else float("nan")

    def item_sentences(self, table: pa.Table) -> np.ndarray:
        """Each scored dependent's sentence."""
        head_row, _, _ = sentence_rows(table)
        return table.column("sent_idx").to_numpy()[head_row >= 0]

    def evaluate(self, probe, table: pa.Table, layer_columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(L,) UAS and (L, n_dependents) whether each dependent's chosen head is its head to find."""
        _, start, lengths = sentence_rows(table)
        head_row = self.heads_to_find(table)
        dep = np.flatnonzero(head_row >= 0)
        vecs = [vectors(table, col) for col in layer_columns]
        hits = np.zeros((len(layer_columns), len(dep)), dtype=bool)
        i = 0
        while i < len(dep):
            j, size = i, 0
            while j < len(dep) and (size == 0 or size + lengths[dep[j]] <= self.CHUNK):
                size += lengths[dep[j]]
                j += 1
            chunk = dep[i:j]
            cand = np.concatenate([start[d] + np.arange(lengths[d]) for d in chunk])
            owner = np.repeat(np.arange(len(chunk)), lengths[chunk])
            X = np.stack([np.concatenate([v[cand], v[chunk[owner]], v[cand] * v[chunk[owner]]], axis=1) for v in vecs])
            score = probe.margin(X)  # (L, pairs): how much more an arc than a non-arc
            score[:, cand == chunk[owner]] = -np.inf  # a word is not its own head
            bounds = np.concatenate([[0], np.cumsum(lengths[chunk])])
            for k in range(len(chunk)):
                best = score[:, bounds[k]:bounds[k + 1]].argmax(1)
                hits[:, i + k] = cand[bounds[k] + best] == head_row[chunk[k]]
            i = j
        return hits.mean(1) if len(dep) else np.full(len(layer_columns), np.nan), hits

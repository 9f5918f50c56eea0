"""Structural probes (Hewitt & Manning 2019) as word tasks: `distance` (squared distances under a rank-k map fit
tree distances; UUAS of their minimum spanning tree, distance Spearman) and `depth` (squared norms fit tree
depths; root accuracy, depth Spearman). Each fits its own probe (xlp/probing/structural.py) on the source's
stored word features and scores every target's test sentences; the items the reducer resamples are sentences."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field

from xlp.probing.trees import Trees, length_averaged, spearman_rows, uuas_counts
from xlp.tasks.base import OwnProbeTask, TaskOptions


class StructuralOptions(TaskOptions):
    rank: int = Field(64, ge=1, description="rank k of the probe's linear map")


def _chain(n: int) -> np.ndarray:
    """(n, n) path lengths in a chain of n words: |i - j|."""
    pos = np.arange(n)
    return np.abs(pos[:, None] - pos[None, :]).astype(np.float64)


class _StructuralTask(OwnProbeTask):
    """What both structural probes share: their options, the label columns they read, their own fit (from a fixed
    start, so every seed gives the same probe) and their items, the scored sentences."""
    Options = StructuralOptions
    needs = ("sent_idx", "word_id", "head", "upos")
    pairwise: bool  # a distance probe (between words), or a depth probe

    def fit(self, table: pa.Table, layer_columns: list[str], probe, device=None):
        """(the fitted probes of every layer column, training sentences)."""
        from xlp.probing.structural import fit_structural  # torch: only where a probe is fit

        probes = fit_structural(table, layer_columns, self.pairwise, self.options.rank, probe.max_iter, probe.tol,
                                device)
        return probes, len(Trees.of(table).lengths)

    def item_sentences(self, table: pa.Table) -> np.ndarray:
        trees = Trees.of(table)
        return table.column("sent_idx").to_numpy()[trees.starts[trees.scored()]]


class DistanceTask(_StructuralTask):
    name = "distance"
    pairwise = True
    metric = "uuas"
    definition = ("Hewitt & Manning's distance probe: a rank-k map (distance.rank, 64) whose squared distances fit "
                  "tree path lengths (L1 loss); UUAS of the minimum spanning tree of the predicted distances over "
                  "the non-punctuation words against the gold arcs between them, counts summed over sentences; the "
                  "`spearman` column: per word, Spearman of predicted and gold distances, averaged per sentence "
                  "length 5-50 then over lengths; baseline = the right-branching chain (each non-punctuation word "
                  "attached to the next), `spearman_baseline` = linear distance |i - j|.")

    @staticmethod
    def value_from_sums(sums: np.ndarray, count: int) -> np.ndarray:
        """Correct edges over gold edges."""
        return sums[0] / sums[1]

    def test_baseline(self, table: pa.Table) -> float:
        trees = Trees.of(table)
        correct = edges = 0
        for i in trees.scored():
            keep = np.flatnonzero(~trees.punct[i])
            chain = {(int(a), int(b)) for a, b in zip(keep[:-1], keep[1:])}
            gold = trees.gold_edges(i)
            correct, edges = correct + len(chain & gold), edges + len(gold)
        return correct / edges if edges else float("nan")

    def evaluate(self, probe, table: pa.Table, layer_columns: list[str]):
        """(L,) UUAS, (L, 2, sentences) correct and gold edges per sentence, and per layer its Spearman columns."""
        trees = Trees.of(table)
        scored = trees.scored()
        gold = {i: trees.distances(i) for i in scored}
        baseline = length_averaged([spearman_rows(_chain(trees.lengths[i]), gold[i]) for i in scored],
                                   trees.lengths[scored])
        sums = np.zeros((len(layer_columns), 2, len(scored)))
        extra = []
        for layer, predicted in enumerate(probe.predict(table, layer_columns, trees)):
            sums[layer] = np.array([uuas_counts(predicted[i], trees, i) for i in scored]).T.reshape(2, -1)
            rho = [spearman_rows(predicted[i], gold[i]) for i in scored]
            extra.append({"spearman": length_averaged(rho, trees.lengths[scored]), "spearman_baseline": baseline})
        return sums[:, 0].sum(1) / np.maximum(sums[:, 1].sum(1), 1), sums, extra


class DepthTask(_StructuralTask):
    name = "depth"
    pairwise = False
    metric = "root_accuracy"
    definition = ("Hewitt & Manning's depth probe: a rank-k map (depth.rank, 64) whose squared norms fit tree depths "
                  "(L1 loss); root accuracy, whether the non-punctuation word of least predicted depth is the root, "
                  "per sentence; the `spearman` column: per sentence, Spearman of predicted and gold depths, "
                  "averaged per sentence length 5-50 then over lengths; baseline = choosing the word at the target's "
                  "most frequent root position, `spearman_baseline` = depth as the distance from that position.")

    @staticmethod
    def _root_position(trees: Trees, scored: np.ndarray) -> int:
        roots = [int(np.flatnonzero(trees.heads[i] < 0)[0]) for i in scored]
        return int(np.bincount(roots).argmax()) if roots else 0

    def test_baseline(self, table: pa.Table) -> float:
        trees = Trees.of(table)
        scored = trees.scored()
        p = self._root_position(trees, scored)
        return float(np.mean([trees.heads[i][min(p, trees.lengths[i] - 1)] < 0 for i in scored])) if len(scored) \
            else float("nan")

    def evaluate(self, probe, table: pa.Table, layer_columns: list[str]):
        """(L,) root accuracy, (L, sentences) whether each sentence's root was found, and per layer its Spearman
        columns."""
        trees = Trees.of(table)
        scored = trees.scored()
        gold = {i: trees.depths(i) for i in scored}
        p = self._root_position(trees, scored)
        position = [np.abs(np.arange(trees.lengths[i]) - p).astype(np.float64) for i in scored]
        baseline = length_averaged([spearman_rows(pos, gold[i]) for pos, i in zip(position, scored)],
                                   trees.lengths[scored])
        hits = np.zeros((len(layer_columns), len(scored)), dtype=bool)
        extra = []
        for layer, predicted in enumerate(probe.predict(table, layer_columns, trees)):
            for k, i in enumerate(scored):
                keep = np.flatnonzero(~trees.punct[i])
                hits[layer, k] = trees.heads[i][keep[np.argmin(predicted[i][keep])]] < 0
            rho = [spearman_rows(predicted[i], gold[i]) for i in scored]
            extra.append({"spearman": length_averaged(rho, trees.lengths[scored]), "spearman_baseline": baseline})
        return hits.mean(1) if len(scored) else np.full(len(layer_columns), np.nan), hits, extra

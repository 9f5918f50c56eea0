"""The parse trees of a shard's sentences and the scores of structural probes' predictions against them
(Hewitt & Manning's, as their code computes them; no torch, so the tasks that use them import light).

Punctuation words (UPOS PUNCT) are left out of the spanning tree, the gold edges and the root choice. UUAS: the
share of gold edges (arcs between two non-punctuation words) in the minimum spanning tree of the predicted
distances over the non-punctuation words (Prim's algorithm). Spearman: per word (distance) or per sentence
(depth), averaged over the sentences of each length from 5 to 50 words, then over those lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SPEARMAN_LENGTHS = (5, 50)  # sentence lengths whose Spearman correlations are averaged (Hewitt & Manning)


@dataclass(frozen=True)
class Trees:
    """The sentences of a shard: word rows, gold trees and which words are punctuation."""
    starts: np.ndarray  # (S,) first row of each sentence
    lengths: np.ndarray  # (S,)
    heads: list[np.ndarray]  # per sentence, each word's head (0-based within the sentence; -1 for the root)
    punct: list[np.ndarray]  # per sentence, bool per word

    @classmethod
    def of(cls, table: pa.Table) -> Trees:
        sent = table.column("sent_idx").to_numpy()
        starts = np.flatnonzero(np.r_[True, sent[1:] != sent[:-1]]) if len(sent) else np.zeros(0, dtype=np.int64)
        lengths = np.diff(np.r_[starts, len(sent)])
        head = table.column("head").to_numpy().astype(np.int64) - 1
        punct = table.column("upos").to_numpy(zero_copy_only=False) == "PUNCT"
        return cls(starts, lengths, [head[s:s + n] for s, n in zip(starts, lengths)],
                   [punct[s:s + n] for s, n in zip(starts, lengths)])

    def distances(self, i: int) -> np.ndarray:
        """(n, n) path lengths in sentence i's tree."""
        from scipy.sparse import csr_matrix  # here: every command imports the tasks, few score trees
        from scipy.sparse.csgraph import shortest_path

        heads = self.heads[i]
        child = np.flatnonzero(heads >= 0)
        adjacency = csr_matrix((np.ones(len(child)), (child, heads[child])), shape=(len(heads),) * 2)
        return shortest_path(adjacency, directed=False, unweighted=True)

    def depths(self, i: int) -> np.ndarray:
        """(n,) each word's depth (the root's is 0)."""
        return self.distances(i)[int(np.flatnonzero(self.heads[i] < 0)[0])]

    def scored(self) -> np.ndarray:
        """The sentences that are scored: those with two non-punctuation words or more."""
        return np.flatnonzero([(~p).sum() >= 2 for p in self.punct])

    def gold_edges(self, i: int) -> set[tuple[int, int]]:
        """Sentence i's arcs between two non-punctuation words, as (smaller, larger) positions."""
        heads, punct = self.heads[i], self.punct[i]
        return {(min(d, h), max(d, h)) for d, h in enumerate(heads) if h >= 0 and not punct[d] and not punct[h]}


def spearman_rows(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of pred against the same row of gold (ties get average ranks)."""
    from scipy.stats import rankdata

    a, b = rankdata(pred, axis=-1), rankdata(gold, axis=-1)
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def length_averaged(values: list[np.ndarray], lengths: np.ndarray) -> float:
    """The mean of per-sentence values (each an array of per-word values, or one) over the sentences of each
    length in SPEARMAN_LENGTHS, then over those lengths (Hewitt & Manning's macro average); NaN without any."""
    lo, hi = SPEARMAN_LENGTHS
    per_length = {}
    for v, n in zip(values, lengths):
        if lo <= n <= hi:
            per_length.setdefault(int(n), []).append(np.atleast_1d(v))
    if not per_length:
        return float("nan")
    return float(np.mean([np.concatenate(v).mean() for v in per_length.values()]))


def spanning_tree(dist: np.ndarray) -> set[tuple[int, int]]:
    """The edges (smaller, larger) of the minimum spanning tree of a full distance matrix (Prim's)."""
    n = len(dist)
    inside = np.zeros(n, dtype=bool)
    inside[0] = True
    best, parent = dist[0].astype(np.float64).copy(), np.zeros(n, dtype=np.int64)
    edges = set()
    for _ in range(n - 1):
        cand = np.where(inside, np.inf, best)
        j = int(np.argmin(cand))
        edges.add((min(j, int(parent[j])), max(j, int(parent[j]))))
        inside[j] = True
        closer = dist[j] < best
        best, parent = np.where(closer, dist[j], best), np.where(closer, j, parent)
    return edges


def uuas_counts(dist: np.ndarray, trees: Trees, i: int) -> tuple[int, int]:
    """(gold edges in the predicted distances' spanning tree over the non-punctuation words, gold edges)."""
    keep = np.flatnonzero(~trees.punct[i])
    tree = {(int(keep[a]), int(keep[b])) for a, b in spanning_tree(dist[np.ix_(keep, keep)])}
    gold = trees.gold_edges(i)
    return len(tree & gold), len(gold)

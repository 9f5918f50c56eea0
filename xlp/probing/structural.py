"""Structural probes (Hewitt & Manning 2019): a rank-k linear map B of word vectors whose squared distances
||B(h_i - h_j)||^2 fit the parse tree's path lengths between words (`distance`), or whose squared norms
||B h_i||^2 fit the words' depths in the tree (`depth`); and the scores of their predictions.

Training: Hewitt & Manning's L1 loss, |predicted - gold| summed over a sentence's word pairs (distance) or words
(depth), divided by the sentence's length squared (distance) or its length, averaged over sentences; on
standardised features (as the linear probe's: B on standardised vectors is B diag(1/scale) on raw ones, and for
depth the norm is taken around the training mean). The probes of a unit's layers are fit together by the linear
probe's batched full-batch L-BFGS (each layer its own curvature history and stopping test), gradients by
autograd, from one fixed start (uniform, the same for every layer and seed: nothing is sampled, so every seed
gives the same probe). The L1 loss has kinks where a prediction equals its target, so a fit usually ends by its
stalled-step test or `probe.max_iter` rather than by `probe.tol`; its iterations and final gradient are recorded.

Scores, as Hewitt & Manning's code computes them: punctuation words (UPOS PUNCT) are left out of the spanning
tree, the gold edges and the root choice. UUAS: the share of gold edges (arcs between two non-punctuation words)
in the minimum spanning tree of the predicted distances over the non-punctuation words (Prim's algorithm).
Distance Spearman: per word, the Spearman correlation of its predicted and gold distances to every word of its
sentence, averaged over the sentences of each length from 5 to 50 words, then over those lengths. Depth: root
accuracy, whether the non-punctuation word of least predicted depth is the root; depth Spearman per sentence,
averaged the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path
from scipy.stats import rankdata

from xlp.probing.linear import _lbfgs, standardised
from xlp.storage.features import vectors

SPEARMAN_LENGTHS = (5, 50)  # sentence lengths whose Spearman correlations are averaged (Hewitt & Manning)
PAIRS_PER_BATCH = 1 << 18  # padded word pairs per sentence batch in training and prediction


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


@dataclass
class StructuralProbes:
    """L rank-k maps over standardised features: squared distances (or norms) of B z are the predictions."""
    kind: ClassVar[str] = "structural"  # recorded in each row
    pairwise: bool  # distances between words (True) or depths of words
    mean: torch.Tensor  # (L, 1, d)
    scale: torch.Tensor  # (L, 1, d)
    maps: torch.Tensor  # (L, k, d)
    iterations: np.ndarray
    grad_norm: np.ndarray
    converged: np.ndarray

    def predict(self, table: pa.Table, layer_columns: list[str], trees: Trees) -> list[list[np.ndarray]]:
        """Per layer, per sentence: predicted (n, n) squared distances, or (n,) squared norms."""
        X = np.stack([vectors(table, col) for col in layer_columns])
        with torch.inference_mode():
            P = torch.bmm((torch.as_tensor(X) - self.mean) / self.scale, self.maps.transpose(1, 2)).double().numpy()
        out = []
        for layer in range(len(P)):
            per = []
            for s, n in zip(trees.starts, trees.lengths):
                v = P[layer, s:s + n]
                per.append(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1) if self.pairwise
                           else (v * v).sum(-1))
            out.append(per)
        return out


def fit_structural(table: pa.Table, layer_columns: list[str], pairwise: bool, rank: int, max_iter: int = 1000,
                   tol: float = 5e-5, device: str | torch.device | None = None) -> StructuralProbes:
    """Fit one rank-`rank` structural probe per layer column on the shard's sentences: a distance probe where
    `pairwise`, else a depth probe."""
    trees = Trees.of(table)
    X = np.stack([vectors(table, col) for col in layer_columns])
    L, _, d = X.shape
    dev = torch.device(device or "cpu")
    mean, scale, Zt = standardised(X, dev)
    Z = Zt.transpose(1, 2)  # (L, n, d), a view
    gen = torch.Generator().manual_seed(0)
    bound = (3.0 / (2 * rank * d)) ** 0.5  # a start whose expected squared distance is about 1
    theta = ((torch.rand(rank * d, generator=gen) * 2 - 1) * bound).repeat(L, 1).to(dev)
    batches = _batches(trees, pairwise, dev)
    iters, gmax, converged = _lbfgs(Z, batches, 0.0, theta, max_iter, tol,
                                    objective=_Loss(pairwise, rank, len(trees.lengths)))
    return StructuralProbes(pairwise, mean.cpu(), scale.cpu(), theta.view(L, rank, d).cpu(), iters, gmax, converged)


@dataclass(frozen=True)
class _Batch:
    rows: torch.Tensor  # (S, m) word rows, padding pointing at row 0
    mask: torch.Tensor  # (S, m, m) real pairs (pairwise) or (S, m) real words
    gold: torch.Tensor  # (S, m, m) tree distances or (S, m) depths
    weight: torch.Tensor  # (S,) 1 / n^2 (pairwise) or 1 / n


def _batches(trees: Trees, pairwise: bool, dev: torch.device) -> list[_Batch]:
    """The sentences, by length, in padded batches of at most PAIRS_PER_BATCH word pairs."""
    order = np.argsort(trees.lengths, kind="stable")
    batches, i = [], 0
    while i < len(order):
        m = int(trees.lengths[order[i]])
        j = i
        while j < len(order) and (j - i + 1) * int(trees.lengths[order[j]]) ** 2 <= max(PAIRS_PER_BATCH, m * m):
            j += 1
        chunk = order[i:j]
        m = int(trees.lengths[chunk].max())
        rows = np.zeros((len(chunk), m), dtype=np.int64)
        words = np.zeros((len(chunk), m), dtype=bool)
        gold = np.zeros((len(chunk), m, m) if pairwise else (len(chunk), m))
        for r, s in enumerate(chunk):
            n = trees.lengths[s]
            rows[r, :n] = trees.starts[s] + np.arange(n)
            words[r, :n] = True
            if pairwise:
                gold[r, :n, :n] = trees.distances(s)
            else:
                gold[r, :n] = trees.depths(s)
        n = trees.lengths[chunk].astype(np.float64)
        mask = words[:, :, None] & words[:, None, :] if pairwise else words
        batches.append(_Batch(torch.as_tensor(rows, device=dev), torch.as_tensor(mask, device=dev),
                              torch.as_tensor(gold, dtype=torch.float32, device=dev),
                              torch.as_tensor(1 / (n * n if pairwise else n), dtype=torch.float32,
                                              device=dev)))
        i = j
    return batches


@dataclass(frozen=True)
class _Loss:
    """Hewitt & Manning's L1 loss (k,) in float64 and its gradient (k, P) of k probes B (k, rank, d) packed flat,
    on features Z (k, n, d); for the linear probe's L-BFGS (its labels argument carries the sentence batches)."""
    pairwise: bool
    rank: int
    sentences: int

    def __call__(self, Z: torch.Tensor, batches: list[_Batch], l2: float, theta: torch.Tensor):
        k, _, d = Z.shape
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            P = torch.bmm(Z, th.view(k, self.rank, d).transpose(1, 2))  # (k, n, rank)
            loss = torch.zeros(k, dtype=torch.float64, device=Z.device)
            for b in batches:
                v = P[:, b.rows]  # (k, S, m, rank)
                if self.pairwise:
                    sq = (v * v).sum(-1)
                    pred = sq[..., :, None] + sq[..., None, :] - 2 * torch.matmul(v, v.transpose(-1, -2))
                    err = ((pred - b.gold).abs() * b.mask).sum((-1, -2))
                else:
                    err = (((v * v).sum(-1) - b.gold).abs() * b.mask).sum(-1)
                loss = loss + (err * b.weight).sum(-1, dtype=torch.float64)
            loss = loss / self.sentences
            (grad,) = torch.autograd.grad(loss.sum(), th)
        return loss.detach(), grad


def spearman_rows(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of pred against the same row of gold (ties get average ranks)."""
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

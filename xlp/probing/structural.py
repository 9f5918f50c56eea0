"""Structural probes (Hewitt & Manning 2019): a rank-k linear map B of word vectors whose squared distances
||B(h_i - h_j)||^2 fit the parse tree's path lengths between words (`distance`), or whose squared norms
||B h_i||^2 fit the words' depths in the tree (`depth`).

Training: Hewitt & Manning's L1 loss, |predicted - gold| summed over a sentence's word pairs (distance) or words
(depth), divided by the sentence's length squared (distance) or its length, averaged over sentences; on
standardised features (as the linear probe's: B on standardised vectors is B diag(1/scale) on raw ones, and for
depth the norm is taken around the training mean). The probes of a unit's layers are fit together by the linear
probe's batched full-batch L-BFGS (each layer its own curvature history and stopping test), gradients by
autograd, from one fixed start (uniform, the same for every layer and seed: nothing is sampled, so every seed
gives the same probe). The L1 loss has kinks where a prediction equals its target, so a fit usually ends by its
stalled-step test or `probe.max_iter` rather than by `probe.tol`; its iterations and final gradient are recorded.

Their predictions are scored against the gold trees in xlp/probing/trees.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch

from xlp.probing.lbfgs import lbfgs
from xlp.probing.linear import standardised
from xlp.probing.trees import Trees
from xlp.storage.features import vectors

PAIRS_PER_BATCH = 1 << 18  # padded word pairs per sentence batch in training and prediction


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
    iters, gmax, converged = lbfgs(Z, batches, 0.0, theta, max_iter, tol,
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

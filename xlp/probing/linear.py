"""Linear probes on frozen features: L2-regularised multinomial logistic regression.

Objective per probe: mean cross-entropy + l2/2 * ||W||^2 on standardised features (bias not
penalised), i.e. scikit-learn's LogisticRegression with C = 1 / (l2 * n_train). Probes that share
labels (one per layer of a source) are fit together in one full-batch L-BFGS solve: the joint
objective is the sum of independent convex ones, so its minimiser is each probe's minimiser, and
one batched matmul replaces a Python-level loop per layer. Gradients are analytic (no autograd). Each
probe is solved in a basis that preconditions it (`preconditioner`); the objective and the stopping test
are the plain problem's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from xlp.probing.lbfgs import lbfgs

# Features are standardised as scikit-learn's StandardScaler does (population std), except that a
# feature whose spread is below this is rounding noise (MiniLM's last layer has one, |x| <= 1.2e-7):
# it is divided by this floor, not blown up to unit variance.
SCALE_FLOOR = 1e-6


@dataclass
class LinearProbes:
    """A stack of L probes over the same label set; features are (L, n, d)."""

    kind: ClassVar[str] = "linear"  # recorded in each row (probe.kind)
    classes: np.ndarray
    mean: torch.Tensor  # (L, 1, d)
    scale: torch.Tensor  # (L, 1, d)
    weight: torch.Tensor  # (L, d, C)
    bias: torch.Tensor  # (L, C)
    iterations: np.ndarray | None = None  # (L,) L-BFGS iterations of each probe's fit
    grad_norm: np.ndarray | None = None  # (L,) final max |gradient| of each probe's mean objective
    converged: np.ndarray | None = None  # (L,) whether each met the tolerance (not the iteration cap)

    def logits(self, Z: torch.Tensor, probes: slice = slice(None)) -> torch.Tensor:
        """(k, n, C) logits of the k `probes` (all by default) on their standardised features Z (k, n, d)."""
        return torch.baddbmm(self.bias[probes, None, :], Z, self.weight[probes])

    def _logits(self, X: np.ndarray) -> torch.Tensor:
        """(L, n, C) logits of raw features X (L, n, d), any float dtype, a layer at a time (no full-size
        float32 copy of X)."""
        L, n, _ = X.shape
        out = torch.empty(L, n, len(self.classes))
        with torch.inference_mode():
            for layer in range(L):
                z = torch.as_tensor(X[layer]).to(torch.float32, copy=True)
                z.sub_(self.mean[layer]).div_(self.scale[layer])
                out[layer] = self.logits(z[None], slice(layer, layer + 1))[0]
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(L, n) predicted labels."""
        return self.classes[self._logits(X).argmax(-1).numpy()]

    def margin(self, X: np.ndarray) -> np.ndarray:
        """(L, n) logit of the last class minus the first's (for 0/1 labels: how much more a 1)."""
        logits = self._logits(X)
        return (logits[..., -1] - logits[..., 0]).numpy()

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(L,) accuracy of each probe."""
        return self.score(X, y, "accuracy")[0]

    def score(self, X: np.ndarray, y: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(L,) `accuracy` or `balanced_accuracy` (mean recall over the classes present in y), and
        the (L, n) per-item correctness behind it."""
        y = np.asarray(y)
        if not len(y):
            return np.full(self.weight.shape[0], np.nan), np.zeros((self.weight.shape[0], 0), dtype=bool)
        hit = self.predict(X) == y[None, :]
        return _metric(hit, y, metric), hit


def _metric(hit: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    if metric == "accuracy":
        return hit.mean(1)
    if metric == "balanced_accuracy":
        return np.stack([hit[:, y == c].mean(1) for c in np.unique(y)]).mean(0)
    raise ValueError(f"unknown metric {metric!r}")


def fit_probes(X: np.ndarray, y: np.ndarray, l2: float = 1e-3, max_iter: int = 1000, tol: float = 5e-5,
               init: LinearProbes | None = None, device: str | torch.device | None = None) -> LinearProbes:
    """Fit one multinomial probe per leading slice of X (L, n, d) on labels y (n,), each to its optimum.

    A probe stops when the largest absolute entry of its gradient is at most `tol` (scikit-learn's
    lbfgs criterion, on the same mean objective), or when a step no longer lowers its loss by more
    than float rounding (REL_CHANGE of it), or after `max_iter` iterations (a safety cap). The result
    records each probe's iterations, final gradient max-norm and whether it met `tol` (`converged`).
    `init` starts every probe from another fit's solution over the same classes (a bootstrap seed,
    the previous checkpoint); the optimum does not depend on it. `device` is where the fit runs (a GPU
    where the cluster gives probes one; the CPU by default); the probes come back on the CPU.
    Deterministic for given inputs and device."""
    X = np.asarray(X)
    if X.ndim == 2:
        X = X[None]
    classes, y_idx = np.unique(y, return_inverse=True)
    L, n, d = X.shape
    C = len(classes)
    dev = torch.device(device or "cpu")
    mean, scale, Zt = standardised(X, dev, transposed=C > 1)
    theta = torch.zeros(L, d * C + C, device=dev)
    iters, gmax = np.zeros(L, dtype=np.int64), np.zeros(L)
    converged = np.ones(L, dtype=bool)
    if C > 1:
        if init is not None and np.array_equal(init.classes, classes) and init.weight.shape == (L, d, C):
            theta = torch.cat([init.weight.reshape(L, -1), init.bias], 1).to(dev, torch.float32).clone()
        onehot_t = torch.nn.functional.one_hot(torch.as_tensor(y_idx, dtype=torch.long, device=dev), C).T.float()
        iters, gmax, converged = softmax_lbfgs(Zt, onehot_t.contiguous(), l2, theta, max_iter, tol)
        del Zt
    W, b = theta[:, : d * C].reshape(L, d, C).cpu(), theta[:, d * C:].cpu()
    return LinearProbes(classes=classes, mean=mean.cpu(), scale=scale.cpu(), weight=W.contiguous(),
                        bias=b.contiguous(),
                        iterations=iters, grad_norm=gmax, converged=converged)


def standardised(X: np.ndarray, device: torch.device, transposed: bool = True):
    """(mean (L, 1, d), scale (L, 1, d), standardised features transposed to (L, d, n), or None where not
    `transposed`) of X (L, n, d), any float dtype, on `device`, one layer at a time: the only full-size array
    is the result (a float16 X is converted a layer at a time). Each layer is transposed first, so that its
    means and scales are reductions along contiguous rows (0.81 to 0.28 s for 25k words x 6 layers on one core)."""
    L, n, d = X.shape
    mean, scale = torch.empty(L, 1, d, device=device), torch.empty(L, 1, d, device=device)
    Zt = torch.empty(L, d, n, device=device) if transposed else None
    scratch = None if transposed else torch.empty(d, n, device=device)  # one layer's, reused
    for layer in range(L):  # written in place: no full-size temporaries
        z = Zt[layer] if transposed else scratch
        z.copy_(torch.as_tensor(X[layer]).to(device).T)  # converted to float32 as it is transposed
        torch.mean(z, 1, out=mean[layer, 0])
        z.sub_(mean[layer].T)
        torch.linalg.vector_norm(z, dim=1, out=scale[layer, 0])
        scale[layer].div_(n ** 0.5).clamp_min_(SCALE_FLOOR)
        z.div_(scale[layer].T)
    return mean, scale, Zt


# Each probe is fit over W' = A^-1 W, A = WEIGHT_SCALE U diag(lam + shift)^-1/2 from the eigenvectors U and values
# lam of its standardised features' correlation: a preconditioner for the Hessian's data term, about S/C at the start
# (the softmax's curvature p(1 - p) ~ 1/C per class), plus the penalty's. shift = l2 C PRECONDITION; on MiniLM's POS
# probes (C = 17, 6 layers, en and de) 0.5-2 gave the fewest iterations: 35-60 % fewer than no preconditioner (0.1:
# 20 %). The optimum, the objective and the stopping test are the unpreconditioned problem's.
PRECONDITION = 1.0
# ... with the weights' coordinates this much smaller against the bias's (which L-BFGS's steps treat alike): on the
# same probes 0.7 took 10-19 % fewer iterations than 1 (five training sets of 5.7k-25k words, layers 0-6; 0.6-0.8
# about as few), deprel's 11-15 % fewer, binary probes about as many
WEIGHT_SCALE = 0.7
# ... from this many items per feature dimension: below, a fit's iterations cost less than the d x d
# eigendecomposition saves (768 dimensions: ~0.1 s a layer on one core)
PRECONDITION_WORDS = 4


def preconditioner(Zt: torch.Tensor, shift: float,
                   eigen: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, A^-T), each (L, d, d), of standardised features Zt (L, d, n): W = A W', gradient over W = A^-T times the
    gradient over W'. `eigen`: their `correlation_eigen`, where it is known."""
    lam, U = eigen or correlation_eigen(Zt)
    c = (lam.clamp_min(0) + shift).sqrt()[:, None, :] / WEIGHT_SCALE
    return (U / c).float(), (U * c).float()


def correlation_eigen(Zt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (L, d) and eigenvectors (L, d, d), float64, of standardised features' correlation."""
    gram = torch.bmm(Zt, Zt.transpose(1, 2)).double() / Zt.shape[2]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # LAPACK's eigenvectors depend on its thread count: a fit's must not
    try:
        return torch.linalg.eigh(gram)
    finally:
        torch.set_num_threads(threads)


def softmax_lbfgs(Zt: torch.Tensor, onehot_t: torch.Tensor, l2: float, theta: torch.Tensor, max_iter: int,
                  tol: float, eigen: tuple[torch.Tensor, torch.Tensor] | None = None):
    """`lbfgs` on softmax_objective; from PRECONDITION_WORDS items per dimension over W' = A^-1 W (A:
    `preconditioner`, shift l2 C PRECONDITION; `eigen` as it takes), with the plain problem's stopping test (on
    fewer, the eigendecomposition or the d x d maps cost more than they save). `theta` (k, d C + C), over W, is
    read and updated in place as lbfgs does; the same returns."""
    k, d, n = Zt.shape
    if n < PRECONDITION_WORDS * d:
        return lbfgs(Zt, onehot_t, l2, theta, max_iter, tol, softmax_objective)
    dC = d * onehot_t.shape[0]
    rotate, unrotate = preconditioner(Zt, l2 * onehot_t.shape[0] * PRECONDITION, eigen)
    rotated = torch.cat([torch.bmm(unrotate.transpose(1, 2), theta[:, :dC].view(k, d, -1)).reshape(k, -1),
                         theta[:, dC:]], 1)
    # lbfgs moves the rows of what it is given as probes stop: its own copy of A
    out = lbfgs((Zt, rotate.clone(), unrotate), onehot_t, l2, rotated, max_iter, tol, _preconditioned_objective,
                _preconditioned_grad_norm)
    theta[:, :dC] = torch.bmm(rotate, rotated[:, :dC].view(k, d, -1)).reshape(k, -1)  # W = A W'
    theta[:, dC:] = rotated[:, dC:]
    return out


def _preconditioned_objective(parts: tuple, onehot_t: torch.Tensor, l2: float, theta: torch.Tensor):
    """softmax_objective (loss, gradient) over W' (theta's weights), W = A W' (parts: Zt, A, A^-T)."""
    Zt, rotate, _ = parts
    k, d, _ = Zt.shape
    dC = theta.shape[1] - onehot_t.shape[0]
    W = torch.bmm(rotate, theta[:, :dC].view(k, d, -1)).reshape(k, -1)
    loss, grad = softmax_objective(Zt, onehot_t, l2, torch.cat([W, theta[:, dC:]], 1))
    g = torch.bmm(rotate.transpose(1, 2), grad[:, :dC].view(k, d, -1)).reshape(k, -1)
    return loss, torch.cat([g, grad[:, dC:]], 1)


def _preconditioned_grad_norm(parts: tuple, grad: torch.Tensor) -> torch.Tensor:
    """(k,) max |gradient| over W (not W') and the bias: `tol` bounds the unpreconditioned problem's gradient."""
    _, _, unrotate = parts
    k, d, _ = unrotate.shape
    dC = grad.shape[1] - grad.shape[1] // (d + 1)
    return torch.maximum(torch.bmm(unrotate, grad[:, :dC].view(k, d, -1)).abs().amax((1, 2)),
                         grad[:, dC:].abs().amax(1))


# words per block of the objective on the CPU, so that a block's features are still in cache when the gradient's
# product reads them again: 512 x 384 float32 is 0.8 MB a probe (a core's L2), 4.7 MB for six. MiniLM's en POS
# features (25k words x 6 layers), CPU ms an evaluation (lower quartile of 30, interleaved) at 256, 384, 512, 1,024
# and 2,048 words: 101, 99, 101, 105, 116 alone; 104, 100, 103, 108, 107 beside a one-thread extraction (132
# unblocked). The fits of en and de (median of 5): 6.8 and 5.4 s against 7.9 and 5.4 s at 2,048 (per iteration 8 %
# and 3 % less)
BLOCK_WORDS = 512


def softmax_objective(Zt: torch.Tensor, onehot_t: torch.Tensor, l2: float, theta: torch.Tensor):
    """Loss (k,) in float64 and gradient (k, P) of k probes: mean cross-entropy + l2/2 ||W||^2.
    Features come transposed, (k, d, n), and labels as a (C, n) one-hot: logits are computed as
    (C, n) blocks, which measured faster than (n, C) ones for few classes. On the CPU, BLOCK_WORDS words at a
    time, so that a block's features are still in cache when the gradient's product reads them again."""
    k, d, n = Zt.shape
    C = onehot_t.shape[0]
    W, b = theta[:, : d * C].view(k, d, C), theta[:, d * C:]
    Wt = W.transpose(1, 2)
    grad_t = (l2 * Wt).contiguous()  # (k, C, d): the gradient over W, transposed, summed block by block
    grad_b = torch.zeros(k, C, device=Zt.device)
    nll = torch.zeros(k, dtype=torch.float64, device=Zt.device)
    block = BLOCK_WORDS if Zt.device.type == "cpu" else n
    for at in range(0, n, block):
        z, y = Zt[:, :, at:at + block], onehot_t[:, at:at + block]
        logp = torch.log_softmax(torch.baddbmm(b[:, :, None], Wt, z), 1)  # (k, C, block)
        nll -= (logp * y).sum(1).sum(1, dtype=torch.float64)
        resid = logp.exp_().sub_(y).div_(n)  # softmax minus one-hot, over n
        grad_t.baddbmm_(resid, z.transpose(1, 2))
        grad_b += resid.sum(2)
    loss = nll / n + 0.5 * l2 * (W * W).sum((1, 2), dtype=torch.float64)
    return loss, torch.cat([grad_t.transpose(1, 2).reshape(k, -1), grad_b], 1)


def majority_accuracy(y_test: np.ndarray) -> float:
    """Accuracy of always answering the test set's most frequent label."""
    if not len(y_test):
        return float("nan")
    _, counts = np.unique(y_test, return_counts=True)
    return float(counts.max() / len(y_test))

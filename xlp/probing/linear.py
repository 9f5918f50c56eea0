"""Linear probes on frozen features: L2-regularised multinomial logistic regression.

Objective per probe: mean cross-entropy + l2/2 * ||W||^2 on standardised features (bias not
penalised), i.e. scikit-learn's LogisticRegression with C = 1 / (l2 * n_train). Probes that share
labels (one per layer of a source) are fit together in one full-batch L-BFGS solve: the joint
objective is the sum of independent convex ones, so its minimiser is each probe's minimiser, and
one batched matmul replaces a Python-level loop per layer. Gradients are analytic (no autograd).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

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

    def logits(self, Z: torch.Tensor) -> torch.Tensor:
        """(L, n, C) logits of standardised features Z (L, n, d)."""
        return torch.baddbmm(self.bias[:, None, :], Z, self.weight)

    def _logits(self, X: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return self.logits((torch.as_tensor(X, dtype=torch.float32) - self.mean) / self.scale)

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
    if init is not None and C > 1 and np.array_equal(init.classes, classes) and init.weight.shape == (L, d, C):
        theta = torch.cat([init.weight.reshape(L, -1), init.bias], 1).to(dev, torch.float32).clone()
    iters, gmax = np.zeros(L, dtype=np.int64), np.zeros(L)
    converged = np.ones(L, dtype=bool)
    if C > 1:
        onehot_t = torch.nn.functional.one_hot(torch.as_tensor(y_idx, dtype=torch.long, device=dev), C).T.float()
        iters, gmax, converged = _lbfgs(Zt, onehot_t.contiguous(), l2, theta, max_iter, tol)
        del Zt
    W, b = theta[:, : d * C].reshape(L, d, C).cpu(), theta[:, d * C:].cpu()
    return LinearProbes(classes=classes, mean=mean.cpu(), scale=scale.cpu(), weight=W.contiguous(),
                        bias=b.contiguous(),
                        iterations=iters, grad_norm=gmax, converged=converged)


def standardised(X: np.ndarray, device: torch.device, transposed: bool = True):
    """(mean (L, 1, d), scale (L, 1, d), standardised features transposed to (L, d, n), or None where not
    `transposed`) of X (L, n, d) on `device`, one layer at a time: no second full-size copy."""
    Xt = torch.as_tensor(X).to(device, torch.float32)
    mean = Xt.mean(1, keepdim=True)
    scale = Xt.std(1, keepdim=True, correction=0).clamp_min(SCALE_FLOOR)
    if not transposed:
        return mean, scale, None
    Zt = torch.empty(X.shape[0], X.shape[2], X.shape[1], device=device)
    for layer in range(X.shape[0]):  # written in place: no full-size temporaries
        torch.sub(Xt[layer].T, mean[layer].T, out=Zt[layer]).div_(scale[layer].T)
    return mean, scale, Zt


_between_steps: list = []  # callbacks run before each L-BFGS step (`between_steps`)


@contextmanager
def between_steps(callback: Callable[[], None]) -> Iterator[None]:
    """Within: `callback()` before each L-BFGS step of every fit (a probe task sets its threads there)."""
    _between_steps.append(callback)
    try:
        yield
    finally:
        _between_steps.remove(callback)


REL_CHANGE = 1e-10  # a probe whose step lowers its loss by less than this fraction has stopped moving
HISTORY = 20  # L-BFGS curvature pairs kept per probe


def _objective(Zt: torch.Tensor, onehot_t: torch.Tensor, l2: float, theta: torch.Tensor):
    """Loss (k,) in float64 and gradient (k, P) of k probes: mean cross-entropy + l2/2 ||W||^2.
    Features come transposed, (k, d, n), and labels as a (C, n) one-hot: logits are computed as
    (C, n) blocks, which measured faster than (n, C) ones for few classes."""
    k, d, n = Zt.shape
    C = onehot_t.shape[0]
    W, b = theta[:, : d * C].view(k, d, C), theta[:, d * C:]
    logp = torch.log_softmax(torch.baddbmm(b[:, :, None], W.transpose(1, 2), Zt), 1)  # (k, C, n)
    nll = -(logp * onehot_t).sum(1).sum(1, dtype=torch.float64) / n
    loss = nll + 0.5 * l2 * (W * W).sum((1, 2), dtype=torch.float64)
    resid = logp.exp_().sub_(onehot_t).div_(n)  # softmax minus one-hot, over n
    grad = torch.cat([(torch.bmm(Zt, resid.transpose(1, 2)) + l2 * W).reshape(k, -1), resid.sum(2)], 1)
    return loss, grad


def _lbfgs(Z: torch.Tensor, onehot_t: torch.Tensor, l2: float, theta: torch.Tensor, max_iter: int,
           tol: float, objective=_objective) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L-BFGS on every probe at once, each with its own curvature history, step length and stopping
    test: the probes are independent problems that share one batched matmul per evaluation. A probe
    that has stopped leaves the batch (its features are moved out of the active block of Z, in place,
    so no copy is made). Updates `theta` (L, P) in place; returns per probe the iterations, the final
    gradient max-norm and whether it met `tol`. `objective(Z, onehot_t, l2, theta)` gives (loss, gradient)
    of k probes (the MLP probe's is its own)."""
    L, P = theta.shape
    iters, gmax, converged = np.zeros(L, dtype=np.int64), np.zeros(L), np.zeros(L, dtype=bool)
    active = list(range(L))  # Z[j] holds the features of probe active[j]
    th = theta.clone()
    f, g = objective(Z, onehot_t, l2, th)
    SY = torch.zeros(L, 2 * HISTORY, P, device=Z.device)  # the last pairs by slot: s in rows 0 .. H - 1, y below
    gram = torch.zeros(L, 2 * HISTORY, 2 * HISTORY, dtype=torch.float64, device=Z.device)  # SY's rows' products
    vg = torch.zeros(L, 2 * HISTORY, 1, dtype=torch.float64, device=Z.device)  # SY's rows' products with g
    kept = torch.zeros(L, HISTORY, dtype=torch.bool, device=Z.device)  # a slot's pair counts (else all zeros)
    orders = _ring_orders(Z.device)
    gamma = torch.zeros(L, device=Z.device)
    stalled = torch.zeros(L, dtype=torch.bool, device=Z.device)
    for it in range(max_iter + 1):
        for callback in _between_steps:
            callback()
        g_inf = g.abs().amax(1)
        done = (g_inf <= tol).cpu().numpy()
        stop = done | stalled.cpu().numpy() | (it == max_iter)
        if stop.any():
            for j in np.flatnonzero(stop):
                lay = active[j]
                theta[lay], iters[lay], gmax[lay], converged[lay] = th[j], it, float(g_inf[j]), bool(done[j])
            keep = np.flatnonzero(~stop)
            if not len(keep):
                break
            if len(keep) < len(active):
                for new, old in enumerate(keep):  # compact the active block (old >= new: safe in order)
                    if new != old:
                        Z[new] = Z[old]
                Z = Z[: len(keep)]
                idx = torch.as_tensor(keep, device=Z.device)
                active = [active[j] for j in keep]
                th, f, g, SY, gram, vg, kept, gamma = (t[idx] for t in (th, f, g, SY, gram, vg, kept, gamma))
        k = len(active)
        if it == 0:  # first step: like torch's L-BFGS
            direction = -g * torch.clamp(1.0 / g.abs().sum(1), max=1.0)[:, None]
        else:
            direction = -_inverse_hessian_times(g, vg, SY, gram, kept, gamma, orders[it % HISTORY])
        slope = (g * direction).sum(1, dtype=torch.float64)
        bad = slope >= 0  # not a descent direction (rounding): restart that probe from the gradient
        if bad.any():
            direction[bad] = -g[bad] * torch.clamp(1.0 / g[bad].abs().sum(1), max=1.0)[:, None]
            slope[bad] = (g[bad] * direction[bad]).sum(1, dtype=torch.float64)
            SY[bad], gram[bad], kept[bad] = 0, 0, False
        th_new = th + direction
        f_new, g_new = objective(Z[:k], onehot_t, l2, th_new)
        for j in torch.nonzero(f_new > f + 1e-4 * slope).flatten().tolist():  # Armijo; rare past the start
            found = _backtrack(Z[j:j + 1], onehot_t, l2, th[j], direction[j], f[j], slope[j], objective)
            if found is None:  # no lower loss along the direction: stay (the probe then counts as stalled)
                f_new[j], g_new[j], th_new[j] = f[j], g[j], th[j]
            else:
                f_new[j], g_new[j], t = found
                th_new[j] = th[j] + t * direction[j]
        s, yv = th_new - th, g_new - g
        ys = (s * yv).sum(1, dtype=torch.float64)
        yy = (yv * yv).sum(1, dtype=torch.float64)
        ok = ys > 1e-10 * yy.sqrt() * (s * s).sum(1, dtype=torch.float64).sqrt()
        slot = it % HISTORY
        SY[:, slot], SY[:, HISTORY + slot] = s * ok[:, None], yv * ok[:, None]  # a skipped pair: zeros
        # every row's product with the new s and y and with the gradient the next direction starts from; three
        # columns, not one: a one-column bmm takes another path when the batch is a single probe (not bitwise
        # the same), and a probe's fit must not depend on the others in its batch
        new = torch.bmm(SY, torch.cat([SY[:, slot::HISTORY], g_new[:, None]], 1).transpose(1, 2)).double()
        gram[:, :, slot::HISTORY], gram[:, slot::HISTORY, :] = new[..., :2], new[..., :2].transpose(1, 2)
        vg = new[..., 2:]  # (k, 2H, 1): s_i'g, y_i'g
        kept[:, slot] = ok
        gamma = torch.where(ok, (ys / yy.clamp_min(1e-300)).float(), gamma)
        stalled = (f - f_new) <= REL_CHANGE * torch.maximum(f.abs(), f_new.abs()).clamp_min(1.0)
        th, f, g = th_new, f_new, g_new
    return iters, gmax, converged


def _ring_orders(device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per it % HISTORY: the slots oldest first, the history's rows (s, then y) in that order, and back."""
    out = []
    for shift in range(HISTORY):
        slots = torch.arange(HISTORY).roll(-shift)
        rows = torch.cat([slots, slots + HISTORY])
        out.append((slots.to(device), rows.to(device), rows.argsort().to(device)))
    return out


def _inverse_hessian_times(g: torch.Tensor, vg: torch.Tensor, SY: torch.Tensor, gram: torch.Tensor,
                           kept: torch.Tensor, gamma: torch.Tensor,
                           order: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """H g for each probe's L-BFGS inverse Hessian H: initial H0 = gamma I and the pairs s_i, y_i in the
    ring SY (k, 2 HISTORY, P; `order` from _ring_orders), whose rows' products with each other are in `gram`
    and with g in `vg`; a pair not `kept` (empty, skipped, reset) is all zeros and is left out. In the compact
    form of Byrd, Nocedal & Schnabel (1994), with the products kept up to date as pairs arrive: one batched
    matrix-vector product and two small triangular solves. The two-loop recursion gives the same H g with
    ~10 small ops per stored pair; at the paper's grid shape, thousands of fits on a few sentences each,
    those ops were most of a fit's time."""
    slots, rows, back = order
    H = HISTORY
    vg = vg.index_select(1, rows)  # oldest first
    G = gram.index_select(1, rows).index_select(2, rows)
    sy, yy = G[:, :H, H:], G[:, H:, H:]  # (k, H, H): s_i'y_j, y_i'y_j
    R = sy.triu() + torch.diag_embed((~kept.index_select(1, slots)).double())  # a left-out pair: unit diagonal
    gam = gamma.double()[:, None, None]
    r = torch.linalg.solve_triangular(R, vg[:, :H], upper=True)  # R^-1 S'g
    p = torch.linalg.solve_triangular(R.transpose(1, 2), sy.diagonal(0, 1, 2)[..., None] * r
                                      + gam * ((yy * r.transpose(1, 2)).sum(2, keepdim=True) - vg[:, H:]), upper=False)
    coef = torch.cat([p, -gam * r], 1).index_select(1, back).float()
    return gamma[:, None] * g + torch.bmm(SY.transpose(1, 2), coef)[..., 0]


def _backtrack(Z, onehot_t, l2, th, direction, f0, slope, objective, tries: int = 30):
    """Halve the step until the loss falls enough (Armijo): (loss, grad, step), or None if it never does."""
    t = 1.0
    for _ in range(tries):
        t *= 0.5
        f, g = objective(Z, onehot_t, l2, (th + t * direction)[None])
        if f[0] <= f0 + 1e-4 * t * slope:
            return f[0], g[0], t
    return None


def majority_accuracy(y_test: np.ndarray) -> float:
    """Accuracy of always answering the test set's most frequent label."""
    if not len(y_test):
        return float("nan")
    _, counts = np.unique(y_test, return_counts=True)
    return float(counts.max() / len(y_test))

"""Linear probes on frozen features: L2-regularised multinomial logistic regression.

Objective per probe: mean cross-entropy + l2/2 * ||W||^2 on standardised features (bias not
penalised), i.e. scikit-learn's LogisticRegression with C = 1 / (l2 * n_train). Probes that share
labels (one per layer of a source) are fit together in one full-batch L-BFGS solve: the joint
objective is the sum of independent convex ones, so its minimiser is each probe's minimiser, and
one batched matmul replaces a Python-level loop per layer. Gradients are analytic (no autograd).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class LinearProbes:
    """A stack of L probes over the same label set; features are (L, n, d)."""

    classes: np.ndarray
    mean: torch.Tensor  # (L, 1, d)
    scale: torch.Tensor  # (L, 1, d)
    weight: torch.Tensor  # (L, d, C)
    bias: torch.Tensor  # (L, C)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(L, n) predicted labels."""
        with torch.inference_mode():
            Z = (torch.as_tensor(X, dtype=torch.float32) - self.mean) / self.scale
            return self.classes[torch.baddbmm(self.bias[:, None, :], Z, self.weight).argmax(-1).numpy()]

    def margin(self, X: np.ndarray) -> np.ndarray:
        """(L, n) logit of the last class minus the first's (for 0/1 labels: how much more a 1)."""
        with torch.inference_mode():
            Z = (torch.as_tensor(X, dtype=torch.float32) - self.mean) / self.scale
            logits = torch.baddbmm(self.bias[:, None, :], Z, self.weight)
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


def fit_probes(X: np.ndarray, y: np.ndarray, l2: float = 1e-3, max_iter: int = 100) -> LinearProbes:
    """Fit one multinomial probe per leading slice of X (L, n, d) on labels y (n,); deterministic."""
    X = np.asarray(X)
    if X.ndim == 2:
        X = X[None]
    classes, y_idx = np.unique(y, return_inverse=True)
    L, n, d = X.shape
    C = len(classes)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    mean = Xt.mean(1, keepdim=True)
    scale = Xt.std(1, keepdim=True).clamp_min(1e-6)
    Z = (Xt - mean) / scale
    target = torch.as_tensor(y_idx, dtype=torch.long)
    onehot = torch.nn.functional.one_hot(target, C).to(torch.float32)
    theta = torch.zeros(L * (d * C + C), requires_grad=True)

    def unpack(t: torch.Tensor):
        return t[: L * d * C].view(L, d, C), t[L * d * C:].view(L, C)

    if C > 1:
        opt = torch.optim.LBFGS([theta], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=1e-6,
                                tolerance_change=1e-10, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            with torch.no_grad():
                W, b = unpack(theta)
                logp = torch.log_softmax(torch.baddbmm(b[:, None, :], Z, W), -1)  # (L, n, C)
                loss = -(logp * onehot).sum() / n + 0.5 * l2 * (W * W).sum()
                resid = (logp.exp() - onehot) / n
                grad = torch.cat([(torch.bmm(Z.transpose(1, 2), resid) + l2 * W).reshape(-1),
                                  resid.sum(1).reshape(-1)])
            theta.grad = grad
            return loss

        opt.step(closure)
    W, b = unpack(theta.detach())
    return LinearProbes(classes=classes, mean=mean, scale=scale, weight=W.clone(), bias=b.clone())


def majority_accuracy(y_test: np.ndarray) -> float:
    """Accuracy of always answering the test set's most frequent label."""
    if not len(y_test):
        return float("nan")
    _, counts = np.unique(y_test, return_counts=True)
    return float(counts.max() / len(y_test))

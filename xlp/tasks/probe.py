"""Linear probes on frozen features: L2-regularised multinomial logistic regression, fit by L-BFGS in torch.

Objective: mean cross-entropy + l2/2 * ||W||^2 on standardised features (bias unpenalised). This is
scikit-learn's LogisticRegression with C = 1 / (l2 * n_train), fit in one full-batch torch solve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class LinearProbe:
    classes: np.ndarray  # label of each output row
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor  # (n_features, n_classes)
    bias: torch.Tensor

    def predict(self, X: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            Z = (torch.as_tensor(X, dtype=torch.float32) - self.mean) / self.scale
            return self.classes[(Z @ self.weight + self.bias).argmax(1).numpy()]

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(X) == y)) if len(y) else float("nan")


def fit_probe(X: np.ndarray, y: np.ndarray, l2: float = 1e-3, max_iter: int = 100) -> LinearProbe:
    """Fit a multinomial logistic-regression probe; deterministic for given (X, y)."""
    classes, y_idx = np.unique(y, return_inverse=True)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    mean = Xt.mean(0)
    scale = Xt.std(0).clamp_min(1e-6)
    Z = (Xt - mean) / scale
    target = torch.as_tensor(y_idx, dtype=torch.long)
    W = torch.zeros(Z.shape[1], len(classes), requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    if len(classes) > 1:
        opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, history_size=20,
                                tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(Z @ W + b, target) + 0.5 * l2 * (W * W).sum()
            loss.backward()
            return loss

        opt.step(closure)
    return LinearProbe(classes=classes, mean=mean, scale=scale, weight=W.detach(), bias=b.detach())


def majority_accuracy(y_test: np.ndarray) -> float:
    """Accuracy of always answering the test set's most frequent label."""
    if not len(y_test):
        return float("nan")
    _, counts = np.unique(y_test, return_counts=True)
    return float(counts.max() / len(y_test))

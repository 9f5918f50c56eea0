"""MLP probes on frozen features: one hidden ReLU layer, then multinomial logistic regression.

Objective per probe: mean cross-entropy + l2/2 * (||W1||^2 + ||W2||^2) on standardised features (biases not
penalised), i.e. scikit-learn's MLPClassifier(solver="lbfgs", activation="relu") with alpha = l2 * n_train.
The probes of a unit's layers are fit together by the linear probe's batched full-batch L-BFGS (each probe
with its own curvature history, step length and stopping test; one batched matmul per evaluation over the
stacked weights) and stop by the same rule: no gradient entry above `tol`, a step that no longer lowers the
loss, or `max_iter`. Full-batch L-BFGS rather than minibatch Adam: the objective is deterministic, so the
stopping rule means what it means for the linear probe (and the probe's iterations and final gradient are
comparable across checkpoints), no learning rate or epoch count has to be tuned per layer and checkpoint, and
probe sets of the paper's size (tens of thousands of words) fit in memory at once.

The objective is not convex: a probe's optimum depends on its start. Each seed draws its own initial
weights (Glorot-uniform, biases zero), the same for every layer, so a layer's fit does not depend on which
layers share its batch, and the spread over seeds includes the spread over starts. Seeds therefore do not
warm-start from the first seed's optimum as linear probes do (that would put every seed on one optimum).
Dropout (`probe.dropout`) multiplies the hidden units by a mask drawn once per fit from the seed (inverted
dropout: kept units scaled by 1 / (1 - p), none dropped at test time); a mask redrawn at every evaluation
would make the objective random and L-BFGS's curvature pairs meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from xlp.probing.lbfgs import lbfgs
from xlp.probing.linear import LinearProbes, standardised


@dataclass(kw_only=True)
class MlpProbes(LinearProbes):
    """A stack of L MLP probes: `hidden_weight` (L, d, H) and `hidden_bias` (L, H) make the ReLU layer,
    `weight` (L, H, C) and `bias` (L, C) the output layer."""

    kind: ClassVar[str] = "mlp"
    hidden_weight: torch.Tensor
    hidden_bias: torch.Tensor

    def logits(self, Z: torch.Tensor, probes: slice = slice(None)) -> torch.Tensor:
        hidden = torch.baddbmm(self.hidden_bias[probes, None, :], Z, self.hidden_weight[probes]).clamp_min_(0)
        return torch.baddbmm(self.bias[probes, None, :], hidden, self.weight[probes])


def fit_mlp_probes(X: np.ndarray, y: np.ndarray, l2: float = 1e-3, max_iter: int = 1000, tol: float = 5e-5,
                   hidden: int = 256, dropout: float = 0.0, seed: int = 0,
                   device: str | torch.device | None = None) -> MlpProbes:
    """Fit one MLP probe per leading slice of X (L, n, d) on labels y (n,), all from the seed's start, with the
    linear probe's batched L-BFGS and stopping rule (see `xlp.probing.linear.fit_probes`). Deterministic for
    given inputs, seed and device."""
    X = np.asarray(X)
    if X.ndim == 2:
        X = X[None]
    classes, y_idx = np.unique(y, return_inverse=True)
    L, n, d = X.shape
    C, H = len(classes), hidden
    dev = torch.device(device or "cpu")
    mean, scale, Zt = standardised(X, dev, transposed=C > 1)
    start, mask = mlp_start(d, H, C, n, dropout, seed)
    theta = start.repeat(L, 1).to(dev)
    iters, gmax, converged = np.zeros(L, dtype=np.int64), np.zeros(L), np.ones(L, dtype=bool)
    if C > 1:
        onehot_t = torch.nn.functional.one_hot(torch.as_tensor(y_idx, dtype=torch.long, device=dev), C).T.float()
        iters, gmax, converged = lbfgs(Zt, onehot_t.contiguous(), l2, theta, max_iter, tol,
                                        objective=MlpObjective(d, H, C, None if mask is None else mask.to(dev)))
        del Zt
    return mlp_probes(theta.cpu(), d, H, classes, mean=mean.cpu(), scale=scale.cpu(), iterations=iters,
                      grad_norm=gmax, converged=converged)


def mlp_start(d: int, H: int, C: int, n: int, dropout: float, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The seed's starting parameters (P,), packed as `MlpObjective` takes them (Glorot-uniform weights, zero
    biases), and its dropout mask (H, n) over the n training items in their given order (None without dropout);
    drawn on the CPU, so every device starts alike."""
    gen = torch.Generator().manual_seed(seed)

    def glorot(fan_in: int, fan_out: int) -> torch.Tensor:
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        return (torch.rand(fan_in * fan_out, generator=gen) * 2 - 1) * bound

    start = torch.cat([glorot(d, H), torch.zeros(H), glorot(H, C), torch.zeros(C)])
    mask = None
    if dropout > 0 and C > 1:
        mask = (torch.rand(H, n, generator=gen) >= dropout).float() / (1 - dropout)
    return start, mask


def mlp_probes(theta: torch.Tensor, d: int, H: int, classes: np.ndarray, **rest) -> MlpProbes:
    """The MLP probes of packed parameters theta (L, P) (`rest`: the other MlpProbes fields)."""
    L, C = theta.shape[0], len(classes)
    o1, o2, o3 = d * H, d * H + H, d * H + H + H * C
    return MlpProbes(classes=classes, hidden_weight=theta[:, :o1].reshape(L, d, H).contiguous(),
                     hidden_bias=theta[:, o1:o2].contiguous(), weight=theta[:, o2:o3].reshape(L, H, C).contiguous(),
                     bias=theta[:, o3:].contiguous(), **rest)


@dataclass(frozen=True)
class MlpObjective:
    """Loss (k,) in float64 and analytic gradient (k, P) of k MLP probes, parameters packed per probe as
    [W1 (d*H), b1 (H), W2 (H*C), b2 (C)]; features transposed (k, d, n), labels a (C, n) one-hot."""
    d: int
    H: int
    C: int
    mask: torch.Tensor | None  # (H, n) inverted-dropout mask, or None

    def __call__(self, Zt: torch.Tensor, onehot_t: torch.Tensor, l2: float, theta: torch.Tensor):
        k, d, n = Zt.shape
        H, C = self.H, self.C
        o1, o2, o3 = d * H, d * H + H, d * H + H + H * C
        W1, b1 = theta[:, :o1].view(k, d, H), theta[:, o1:o2]
        W2, b2 = theta[:, o2:o3].view(k, H, C), theta[:, o3:]
        pre = torch.baddbmm(b1[:, :, None], W1.transpose(1, 2), Zt)  # (k, H, n)
        act = pre.clamp_min(0)
        if self.mask is not None:
            act = act * self.mask
        logp = torch.log_softmax(torch.baddbmm(b2[:, :, None], W2.transpose(1, 2), act), 1)  # (k, C, n)
        nll = -(logp * onehot_t).sum(1).sum(1, dtype=torch.float64) / n
        penalty = (W1 * W1).sum((1, 2), dtype=torch.float64) + (W2 * W2).sum((1, 2), dtype=torch.float64)
        resid = logp.exp_().sub_(onehot_t).div_(n)  # softmax minus one-hot, over n
        grad_act = torch.bmm(W2, resid)  # (k, H, n)
        if self.mask is not None:
            grad_act *= self.mask
        grad_pre = grad_act.mul_(pre > 0)
        grad = torch.cat([(torch.bmm(Zt, grad_pre.transpose(1, 2)) + l2 * W1).reshape(k, -1), grad_pre.sum(2),
                          (torch.bmm(act, resid.transpose(1, 2)) + l2 * W2).reshape(k, -1), resid.sum(2)], 1)
        return nll + 0.5 * l2 * penalty, grad

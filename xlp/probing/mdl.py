"""Minimum description length of a probe's training labels: the online code of Voita & Titov (2020).

The labels are sent in blocks, in a fixed random order of the items: the first block (0.1 % of the items) with the
uniform code (log2 K bits each, K classes), every later block with the code of a probe trained on all the items
before it (-log2 p(label | x) bits each). The receiver has every item's features, so they are standardised once
over all items (labels are what is sent). Each block's probes are the batched L-BFGS of `linear.py` over layers,
warm-started from the previous block's weights. Compression = uniform codelength / online codelength.

Every block's probe has the same prior: it minimises the summed cross-entropy of its t items + (l2 n)/2 ||W||^2,
the penalty of a probe fit on all n items (`linear.fit_probes`' mean objective with l2 n / t). Holding l2 per item
instead makes a small block's prior t/n times weaker: a probe on the first few dozen of arc's 1,152-dimensional
pair features memorised them and coded the next block worse than a coin (arc compression 0.37-0.70 on MiniLM),
and POS's codes were worse too. One prior for the whole transmission is what a Bayesian (MAP) online code of one
model class would use. A block's fit stops at the gradient max-norm tol sqrt(n / t) rather than tol: the mean
gradient's sampling noise over t items is sqrt(n / t) times the full data's, so every block stops as close to its
optimum, measured in its own noise, as the full fit; the small blocks, whose items weigh little in the codelength,
no longer take the most iterations.

A label the probe has not seen yet (a class absent from the items before its block) has no finite optimum: its
bias falls without bound, and its codelength would be wherever the optimiser stopped. So the code of the block
after t items is the probe's distribution mixed with the uniform one, (1 - e) p + e / K with e = 1 / (t + 1) (as
if one more item, uniformly labelled, had been seen): an unseen label costs at most log2(K (t + 1)) bits, and a
seen one at most log2(1 / (1 - e)) bits more than under the probe alone (0.4 bits after 2 items, 0.002 after 1,000).

With `mlp` (probe.kind: mlp) every block's probe is the MLP probe of `mlp.py`, the same objective and prior: the
first block's fit starts from the seed's start (and its dropout mask over the items in transmission order), each
later block's from the previous block's optimum. A run's probe units hash `definition()` when they compute the code,
so a run made under another definition is redone rather than mixed with this one's codelengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where a code is computed: planning a run reads `definition` without it
    import torch

FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)  # block ends, share of items
ORDER_SEED = 0  # the transmission order: the same for every checkpoint, so the items pair across a curve
# What a codelength means beyond FRACTIONS and ORDER_SEED. Raise it whenever the computation changes what it gives (the
# first block's code, the prior, the mixture with the uniform code, a block's start or stopping rule): runs made
# before are then redone.
CODE_VERSION = 1


def definition() -> str:
    """What the online code's rows mean, for the hash of every probe unit that computes it."""
    return f"online code {CODE_VERSION}, blocks at {list(FRACTIONS)}, order seed {ORDER_SEED}"


@dataclass(frozen=True)
class MlpShape:
    """The MLP probe an online code fits in every block (probe.kind: mlp)."""
    hidden: int
    dropout: float
    seed: int


@dataclass
class OnlineCode:
    """Each layer's codelength of each item's label, in bits, in the items' given order."""

    item_bits: np.ndarray  # (L, n)
    classes: int
    iterations: np.ndarray  # (L,) L-BFGS iterations over all blocks
    grad_norm: np.ndarray  # (L,) the last block's final gradient max-norm
    kind: str = "linear"  # the probe of every block (probe.kind)

    @property
    def uniform_item_bits(self) -> float:
        return float(np.log2(self.classes)) if self.classes else 0.0

    @property
    def online(self) -> np.ndarray:
        """(L,) online codelength in bits."""
        return self.item_bits.sum(1, dtype=np.float64)

    @property
    def uniform(self) -> float:
        """Uniform codelength in bits: n log2 K."""
        return self.item_bits.shape[1] * self.uniform_item_bits

    @property
    def compression(self) -> np.ndarray:
        """(L,) uniform / online codelength (nan where there is nothing to send: one class)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.online > 0, self.uniform / self.online, np.nan)


def block_ends(n: int) -> np.ndarray:
    """Where each block ends (items sent so far), at the fractions of Voita & Titov; at least one item each."""
    return np.unique(np.clip([int(f * n) for f in FRACTIONS], 1, n)) if n else np.zeros(0, dtype=np.int64)


def transmission_order(n: int) -> np.ndarray:
    return np.random.default_rng(ORDER_SEED).permutation(n)


def online_code(X: np.ndarray, y: np.ndarray, l2: float = 1e-3, max_iter: int = 1000, tol: float = 5e-5,
                device: str | torch.device | None = None, mlp: MlpShape | None = None) -> OnlineCode:
    """The online codelength of labels y (n,) given features X (L, n, d), for every layer at once, in the order
    `transmission_order(n)`. The probe of the block after t items (linear, or `mlp`) minimises the objective of
    `linear.fit_probes` (`mlp.fit_mlp_probes`) with l2 n / t (summed cross-entropy + (l2 n)/2 ||W||^2: one prior for
    every block) over all K classes of y, those not yet seen included."""
    import torch

    from xlp.probing.lbfgs import lbfgs
    from xlp.probing.linear import (
        PRECONDITION_WORDS,
        LinearProbes,
        correlation_eigen,
        softmax_lbfgs,
        standardised,
    )
    from xlp.probing.mlp import MlpObjective, mlp_probes, mlp_start

    X = np.asarray(X)
    if X.ndim == 2:
        X = X[None]
    classes, y_idx = np.unique(y, return_inverse=True)
    L, n, d = X.shape
    K = len(classes)
    bits = np.full((L, n), np.log2(K) if K else 0.0)  # the first block's uniform code
    iters, gmax, kind = np.zeros(L, dtype=np.int64), np.zeros(L), "linear" if mlp is None else "mlp"
    if K < 2 or n < 2:
        return OnlineCode(bits, K, iters, gmax, kind)
    order = transmission_order(n)
    dev = torch.device(device or "cpu")
    mean, scale, Zt = standardised(X, dev)  # (L, d, n), transposed as lbfgs takes them
    at = torch.as_tensor(order, device=dev)
    for layer in range(L):  # the items in transmission order, one layer at a time: no second full-size copy
        Zt[layer] = Zt[layer][:, at]
    sent = torch.as_tensor(y_idx[order], dtype=torch.long, device=dev)
    onehot_t = torch.nn.functional.one_hot(sent, K).T.float()
    eigen = None  # the linear probe's preconditioner (linear.fit_probes), on enough items
    if mlp is None:
        theta, mask = torch.zeros(L, d * K + K, device=dev), None
        if n >= PRECONDITION_WORDS * d:
            eigen = correlation_eigen(Zt)
    else:
        start_theta, mask = mlp_start(d, mlp.hidden, K, n, mlp.dropout, mlp.seed)
        theta = start_theta.repeat(L, 1).to(dev)
        mask = None if mask is None else mask.to(dev)

    def probes():
        if mlp is None:
            return LinearProbes(classes=classes, mean=mean, scale=scale, weight=theta[:, :d * K].view(L, d, K),
                                bias=theta[:, d * K:])
        return mlp_probes(theta, d, mlp.hidden, classes, mean=mean, scale=scale)

    ends = block_ends(n)
    for start, end in zip(ends[:-1], ends[1:]):  # each block starts from the previous block's optimum
        # lbfgs moves its features in place as probes converge: it gets its own copy of the block's prefix
        # one prior for every block; the stopping test relative to the block's sampling noise (see the docstring)
        prefix, labels, block_l2 = Zt[:, :, :start].contiguous(), onehot_t[:, :start].contiguous(), l2 * n / start
        if mlp is None:  # as linear.fit_probes, large blocks preconditioned with all the items' correlation (any
            # preconditioner keeps a block's optimum)
            it, gmax, _ = softmax_lbfgs(prefix, labels, block_l2, theta, max_iter, tol * np.sqrt(n / start), eigen)
        else:
            objective = MlpObjective(d, mlp.hidden, K, None if mask is None else mask[:, :start].contiguous())
            it, gmax, _ = lbfgs(prefix, labels, block_l2, theta, max_iter, tol * np.sqrt(n / start), objective)
        iters += it
        with torch.inference_mode():
            logp = torch.log_softmax(probes().logits(Zt[:, :, start:end].transpose(1, 2)), -1)
            got = logp.gather(2, sent[start:end].expand(L, -1)[..., None])[..., 0].double()
            eps = 1.0 / (start + 1)  # the probe's code mixed with the uniform one (see the module's docstring)
            got = torch.logaddexp(got + np.log1p(-eps), torch.full_like(got, np.log(eps / K)))
        bits[:, order[start:end]] = (-got / np.log(2)).cpu().numpy()
    return OnlineCode(bits, K, iters, gmax, kind)

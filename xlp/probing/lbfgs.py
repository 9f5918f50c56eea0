"""Full-batch L-BFGS on a batch of independent probes at once (the linear, MLP and structural probes' solver).

Each probe keeps its own curvature history, step length and stopping test; one batched objective evaluates
them all. The inverse Hessian is applied in the compact form of Byrd, Nocedal & Schnabel (1994).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

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


def lbfgs(Z, onehot_t: torch.Tensor, l2: float, theta: torch.Tensor, max_iter: int,
          tol: float, objective, grad_norm=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L-BFGS on every probe at once, each with its own curvature history, step length and stopping
    test: the probes are independent problems that share one batched matmul per evaluation. A probe
    that has stopped leaves the batch (its features are moved out of the active block of Z, in place,
    so no copy is made). Updates `theta` (L, P) in place; returns per probe the iterations, the final
    gradient max-norm and whether it met `tol`. `objective(Z, onehot_t, l2, theta)` gives (loss, gradient)
    of k probes (the MLP probe's is its own); Z is a tensor or a tuple of them, each with a row per probe.
    `grad_norm(Z, gradient)` is what `tol` bounds (by default max |gradient|)."""
    L, P = theta.shape
    iters, gmax, converged = np.zeros(L, dtype=np.int64), np.zeros(L), np.zeros(L, dtype=bool)
    active = list(range(L))  # Z[j] holds the features of probe active[j]
    single = not isinstance(Z, tuple)
    parts = (Z,) if single else Z  # rebound to the active block's rows as probes stop

    def rows(parts: tuple, sl: slice):
        """What the objective takes (as Z came: a tensor or a tuple) of `parts`' rows `sl`."""
        return parts[0][sl] if single else tuple(z[sl] for z in parts)

    grad_norm = grad_norm or (lambda _, g: g.abs().amax(1))
    device = parts[0].device
    th = theta.clone()
    f, g = objective(Z, onehot_t, l2, th)
    SY = torch.zeros(L, 2 * HISTORY, P, device=device)  # the last pairs by slot: s in rows 0 .. H - 1, y below
    gram = torch.zeros(L, 2 * HISTORY, 2 * HISTORY, dtype=torch.float64, device=device)  # SY's rows' products
    vg = torch.zeros(L, 2 * HISTORY, 1, dtype=torch.float64, device=device)  # SY's rows' products with g
    kept = torch.zeros(L, HISTORY, dtype=torch.bool, device=device)  # a slot's pair counts (else all zeros)
    orders = _ring_orders(device)
    gamma = torch.zeros(L, device=device)
    stalled = torch.zeros(L, dtype=torch.bool, device=device)
    for it in range(max_iter + 1):
        for callback in _between_steps:
            callback()
        g_inf = grad_norm(rows(parts, slice(None)), g)
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
                        for z in parts:
                            z[new] = z[old]
                parts = tuple(z[: len(keep)] for z in parts)
                idx = torch.as_tensor(keep, device=device)
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
        f_new, g_new = objective(rows(parts, slice(k)), onehot_t, l2, th_new)
        for j in torch.nonzero(f_new > f + 1e-4 * slope).flatten().tolist():  # Armijo; rare past the start
            found = _backtrack(rows(parts, slice(j, j + 1)), onehot_t, l2, th[j], direction[j], f[j], slope[j],
                               objective)
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

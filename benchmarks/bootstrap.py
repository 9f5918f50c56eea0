"""The reducer's bootstrap over test items: a plain loop (draw the items of each replicate, index the curve's
per-item scores, average; per half, per seed, per curve) vs xlp's (multinomial counts and one matrix product per
chunk of curves), in one process on the same curves; prints both times, the ratio, how far the two estimates of
each checkpoint's bootstrap standard error are apart (their draws differ: the agreement is statistical; the exact
equality with a plain loop over the same draws is tests/test_analysis.py's), and xlp's time per curve at the size
of the paper's curves.

    python benchmarks/bootstrap.py [--curves 8] [--items 5000] [--steps 39] [--seeds 3] [--boot 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from xlp.analysis.curves import bootstrap
from xlp.tasks import BUILT_IN


def plain(curves: dict, n: int, rng: np.random.Generator, n_boot: int) -> dict:
    """The way one writes it first: per replicate, draw indices within each half, index and average."""
    perm = rng.permutation(n)
    halves = [np.sort(perm[: n // 2]), np.sort(perm[n // 2:])]
    out = {}
    for key, items in curves.items():
        values = items[:, :, 0, :].astype(float)  # (T, K, n) 0/1
        T, K, _ = values.shape
        boot = np.empty((2, n_boot, T))
        for h, idx in enumerate(halves):
            for r in range(n_boot):
                draw = rng.choice(idx, size=len(idx))
                seeds = rng.integers(0, K, size=K)
                boot[h, r] = values[:, seeds][:, :, draw].mean(axis=(1, 2))
        out[key] = boot
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--curves", type=int, default=8)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=39)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--boot", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    T, K, n = args.steps, args.seeds, args.items
    rate = np.linspace(0.3, 0.8, T)[:, None, None, None]
    curves = {i: (rng.random((T, K, 1, n)) < rate).astype(np.uint8) for i in range(args.curves)}

    t = time.perf_counter()
    naive = plain(curves, n, np.random.default_rng(1), args.boot)
    t_plain = time.perf_counter() - t
    t = time.perf_counter()
    fast = bootstrap(curves, n, np.random.default_rng(1), args.boot, value=BUILT_IN["pos"].value_from_sums)
    t_xlp = time.perf_counter() - t

    gap = max(float(np.max(np.abs(naive[k][h].std(axis=0) - fast[k]["boot"][h].std(axis=0))))
              for k in curves for h in (0, 1))
    se = float(np.mean([fast[k]["boot"][0].std(axis=0).mean() for k in curves]))
    print(f"{args.curves} curves x {T} checkpoints x {K} seeds x {n} items, {args.boot} replicates per half")
    print(f"plain loop {t_plain:.2f} s, xlp {t_xlp:.2f} s: {t_plain / t_xlp:.1f}x")
    print(f"bootstrap standard errors: mean {se:.4f}, largest difference between the two {gap:.4f}")

    # one target's curves at the paper's size: 13 layers, 39 checkpoints, 3 seeds, about 20,000 test words
    paper = {i: (rng.random((39, 3, 1, 20000)) < 0.6).astype(np.uint8) for i in range(13)}
    t = time.perf_counter()
    bootstrap(paper, 20000, np.random.default_rng(2), 1000, value=BUILT_IN["pos"].value_from_sums)
    took = time.perf_counter() - t
    print(f"xlp at the paper's size (13 curves of 39 checkpoints x 3 seeds x 20,000 words, 1,000 replicates): "
          f"{took:.2f} s, {took / len(paper):.2f} s per curve")


if __name__ == "__main__":
    main()

"""Probe fitting: scikit-learn's LogisticRegression (lbfgs, one fit per layer, the same objective and
gradient tolerance) vs xlp's batched torch probe, in one process on the same features (MiniLM, every
layer, POS, trained on English and on German, scored on both); prints fits/s, iterations, the ratio
and the accuracy difference of every cell (layer x source x target).

    python benchmarks/probing.py [--train 1000] [--test 500] [--tol 5e-5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from xlp.config import ProbeSpec
from xlp.data.conllu import read_conllu
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.paths import shared_dir
from xlp.probing.linear import SCALE_FLOOR, fit_probes

FILES = {("en", "train"): "UD_English-EWT/en_ewt-ud-dev.conllu", ("en", "test"): "UD_English-EWT/en_ewt-ud-test.conllu",
         ("de", "train"): "UD_German-GSD/de_gsd-ud-dev.conllu", ("de", "test"): "UD_German-GSD/de_gsd-ud-test.conllu"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--l2", type=float, default=ProbeSpec().l2)
    ap.add_argument("--tol", type=float, default=ProbeSpec().tol, help="gradient tolerance of both probes")
    ap.add_argument("--max-iter", type=int, default=ProbeSpec().max_iter, help="iteration cap of both probes")
    args = ap.parse_args()
    ex = FeatureExtractor(Checkpoint(0, str(shared_dir() / "models" / "all-MiniLM-L6-v2")), layers="all")
    data = {}
    for (lang, split), path in FILES.items():
        sentences = read_conllu(shared_dir() / "ud" / path, args.train if split == "train" else args.test)
        vecs = ex.extract([s.forms for s in sentences])
        # stored as float16, read back as float32: what a probe unit sees
        X = np.stack([vecs[k] for k in sorted(vecs)]).astype(np.float16).astype(np.float32)
        data[(lang, split)] = (X, np.array([t for s in sentences for t in s.upos]))
    n_layers = data[("en", "train")][0].shape[0]
    cells = [(s, t) for s in ("en", "de") for t in ("en", "de")]

    sk, sk_iters, t = {}, {}, time.perf_counter()
    for src in ("en", "de"):
        X, y = data[(src, "train")]
        for layer in range(n_layers):
            scaler = StandardScaler().fit(X[layer])
            scaler.scale_ = np.maximum(scaler.scale_, SCALE_FLOOR)  # xlp's standardisation (see probe.py)
            clf = LogisticRegression(C=1 / (args.l2 * len(y)), tol=args.tol, max_iter=args.max_iter)
            clf.fit(scaler.transform(X[layer]), y)
            sk_iters[(layer, src)] = int(clf.n_iter_[0])
            for tgt in ("en", "de"):
                Xt, yt = data[(tgt, "test")]
                sk[(layer, src, tgt)] = float((clf.predict(scaler.transform(Xt[layer])) == yt).mean())
    t_sk = time.perf_counter() - t

    ours, iters, t = {}, {}, time.perf_counter()
    for src in ("en", "de"):
        X, y = data[(src, "train")]
        probes = fit_probes(X, y, l2=args.l2, max_iter=args.max_iter, tol=args.tol)
        for layer in range(n_layers):
            iters[(layer, src)] = (int(probes.iterations[layer]), float(probes.grad_norm[layer]))
        for tgt in ("en", "de"):
            Xt, yt = data[(tgt, "test")]
            for layer, acc in enumerate(probes.accuracy(Xt, yt)):
                ours[(layer, src, tgt)] = float(acc)
    t_ours = time.perf_counter() - t

    fits = 2 * n_layers
    words = ", ".join(f"{lang}-{split} {len(y):,}" for (lang, split), (_, y) in data.items())
    print(f"POS, MiniLM, {n_layers} layers of d={data[('en', 'train')][0].shape[2]}, words {words}; "
          f"l2={args.l2}, tol={args.tol}")
    print(f"scikit-learn lbfgs : {fits / t_sk:7.2f} fits/s ({t_sk:.1f} s)")
    print(f"xlp batched L-BFGS : {fits / t_ours:7.2f} fits/s ({t_ours:.1f} s)")
    print(f"speed-up {t_sk / t_ours:.1f}x")
    print("per layer: iterations sklearn/xlp (en src, de src); accuracy xlp minus sklearn in points "
          "(en->en en->de de->en de->de)")
    worst = 0.0
    for layer in range(n_layers):
        diffs = [100 * (ours[(layer, s, t)] - sk[(layer, s, t)]) for s, t in cells]
        worst = max(worst, *map(abs, diffs))
        its = ", ".join(f"{sk_iters[(layer, s)]}/{iters[(layer, s)][0]}" for s in ("en", "de"))
        print(f"  layer {layer}: iters {its:<16} " + "  ".join(f"{d:+6.2f}" for d in diffs))
    print(f"largest accuracy difference {worst:.2f} points; xlp's largest final gradient max-norm "
          f"{max(g for _, g in iters.values()):.1e}")


if __name__ == "__main__":
    main()

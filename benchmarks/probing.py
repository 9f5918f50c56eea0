"""Probe fitting: scikit-learn's LogisticRegression (lbfgs, one fit per layer, equivalent
regularisation) vs xlp's batched torch probe, in one process on the same stored features
(MiniLM, every layer, POS, English); prints fits/s, accuracy of both and the ratio.

    python benchmarks/probing.py [--train 1000] [--test 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.paths import shared_dir
from xlp.spec import ProbeSpec
from xlp.tasks.probe import fit_probes
from xlp.tasks.ud import read_conllu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--l2", type=float, default=ProbeSpec().l2)
    ap.add_argument("--max-iter", type=int, default=ProbeSpec().max_iter, help="xlp probe L-BFGS iterations")
    args = ap.parse_args()
    ud = shared_dir() / "ud" / "UD_English-EWT"
    tr = read_conllu(ud / "en_ewt-ud-dev.conllu", args.train)
    te = read_conllu(ud / "en_ewt-ud-test.conllu", args.test)
    ex = FeatureExtractor(Checkpoint(0, str(shared_dir() / "models" / "all-MiniLM-L6-v2")), layers="all")
    f_tr, f_te = ex.extract([s.forms for s in tr]), ex.extract([s.forms for s in te])
    layers = sorted(f_tr)
    X = np.stack([f_tr[k] for k in layers]).astype(np.float32)
    Xt = np.stack([f_te[k] for k in layers]).astype(np.float32)
    y = np.array([t for s in tr for t in s.upos])
    yt = np.array([t for s in te for t in s.upos])

    t = time.perf_counter()
    sk_acc = []
    for i in range(len(layers)):
        scaler = StandardScaler().fit(X[i])
        clf = LogisticRegression(C=1 / (args.l2 * len(y)), max_iter=1000).fit(scaler.transform(X[i]), y)
        sk_acc.append(float((clf.predict(scaler.transform(Xt[i])) == yt).mean()))
    t_sk = time.perf_counter() - t
    t = time.perf_counter()
    ours = fit_probes(X, y, l2=args.l2, max_iter=args.max_iter).accuracy(Xt, yt)
    t_ours = time.perf_counter() - t

    print(f"POS, en, {len(y)} train / {len(yt)} test words, {len(layers)} layers of d={X.shape[2]}, l2={args.l2}")
    print(f"scikit-learn lbfgs : {len(layers) / t_sk:7.2f} fits/s  accuracy {np.round(sk_acc, 4).tolist()}")
    print(f"xlp batched L-BFGS : {len(layers) / t_ours:7.2f} fits/s  accuracy {np.round(ours, 4).tolist()}")
    gap = np.abs(np.array(sk_acc) - ours).max() * 100
    print(f"speed-up {t_sk / t_ours:.1f}x; largest accuracy difference {gap:.2f} points")


if __name__ == "__main__":
    main()

"""The MDL pass (online code, Voita & Titov 2020: ten probes on growing prefixes of the training items, each
warm-started from the one before) against one plain probe fit on the same data, in one process: MiniLM, every
layer, English EWT POS and its control task (pos_control); prints both times, their ratio (target: at most 3x),
each layer's compression and the online and uniform codelengths. Wall seconds on a shared machine are
inflated by whatever else runs (a load of 13-16 once showed pos_control at 3.8x, and 0.26x at a load of 7), so
the ratio is also given in this process's CPU seconds (torch's threads included), which other jobs inflate far
less. Torch runs on `--threads` threads, by default 1, as in a probe unit (an actor of cluster.cpus_per_probe CPUs,
1 by default: Ray sets its OMP_NUM_THREADS): two threads on a loaded 2-core machine spent most of their time waiting
for each other (the plain POS fit 67-87 s wall against 9 s on one thread), which made the ratio noise.

    python benchmarks/mdl.py [--train 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from xlp.config import ProbeSpec
from xlp.data.conllu import read_conllu
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.paths import shared_dir
from xlp.probing.linear import fit_probes
from xlp.probing.mdl import online_code
from xlp.storage.features import features_table
from xlp.tasks import BUILT_IN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=1000,
                    help="EWT sentences (its dev split: the shared copy has no train split)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a probe unit's: cluster.cpus_per_probe)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = ProbeSpec()
    sentences = read_conllu(shared_dir() / "ud" / "UD_English-EWT" / "en_ewt-ud-dev.conllu", args.train)
    ex = FeatureExtractor(Checkpoint(0, str(shared_dir() / "models" / "all-MiniLM-L6-v2")), layers="all")
    vecs = ex.extract([s.forms for s in sentences])
    # stored as float16, read back as float32: what a probe unit sees
    table = features_table(sentences, {k: v.astype(np.float16) for k, v in vecs.items()})
    cols = [f"layer_{k}" for k in sorted(vecs)]
    print(f"load average {os.getloadavg()[0]:.1f}; {len(sentences)} sentences, layers {sorted(vecs)}, "
          f"{torch.get_num_threads()} torch thread(s)")
    for name in ("pos", "pos_control"):
        task = BUILT_IN[name].trained_on(table)
        X, y = task.examples(table, cols)
        t, c = time.perf_counter(), time.process_time()
        plain = fit_probes(X, y, p.l2, p.max_iter, p.tol)
        t_plain, c_plain = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        code = online_code(X, y, p.l2, p.max_iter, p.tol)
        t_mdl, c_mdl = time.perf_counter() - t, time.process_time() - c
        print(f"{name}: {len(y)} words, {len(np.unique(y))} classes (load average {os.getloadavg()[0]:.1f})\n"
              f"  plain fit {t_plain:.1f} s wall, {c_plain:.1f} s CPU ({plain.iterations.sum()} iterations over "
              f"layers)\n  MDL pass {t_mdl:.1f} s wall, {c_mdl:.1f} s CPU ({code.iterations.sum()})\n"
              f"  ratio {t_mdl / t_plain:.2f}x wall, {c_mdl / c_plain:.2f}x CPU")
        for layer, c, online in zip(sorted(vecs), code.compression, code.online):
            print(f"  layer {layer}: compression {c:.2f} (online {online:,.0f} bits, uniform {code.uniform:,.0f})")


if __name__ == "__main__":
    main()

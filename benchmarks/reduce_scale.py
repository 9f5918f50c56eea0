"""The reducer at the paper's POS size: 39 checkpoints x 18 source languages x 13 layers, each source scored on
itself and 15 other languages (3,744 curves), 3 seeds that agree (a convex probe), synthetic per-item
correctness over 2,000 test words in 100 sentences per target, rising with the step. Reduces the same rows
serially and with curves analysed as Ray tasks, in one process; prints both times, the ratio, whether the
results are the same bytes, and the parallel time with Ray limited to 1 CPU and to 2.

    python benchmarks/reduce_scale.py [--small] [--cpus 1 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

STEPS = sorted({0, *np.unique(np.geomspace(1000, 1_500_000, 38).round(-3).astype(int))})
LANGS = [chr(97 + i // 26) + chr(97 + i % 26) for i in range(18)]


def synthetic_probes(langs=LANGS, steps=STEPS, layers=13, targets=16, words=2000, sentences=100, seeds=3,
                     seed=0) -> pd.DataFrame:
    """POS rows with per-item correctness: each word right with a probability that rises with the step (and a
    little with the layer, falls for other targets); seeds agree, as a convex probe's do."""
    rng = np.random.default_rng(seed)
    steps = np.asarray(steps)
    rise = np.log1p(steps / 20_000) / np.log1p(steps[-1] / 20_000)
    groups = np.sort(rng.integers(0, sentences, words)).astype(np.int32).tobytes()
    rows = []
    for s, src in enumerate(langs):
        tgts = [src] + [langs[(s + k) % len(langs)] for k in range(1, targets)]
        for tgt in tgts:
            hard = rng.random(words)  # each test word's difficulty, fixed per target
            for layer in range(layers):
                for k, step in enumerate(steps):
                    p = 0.3 + 0.5 * rise[k] * (1 if tgt == src else 0.6) + 0.01 * layer / layers
                    correct = hard < p + rng.normal(0, 0.01)
                    packed = np.packbits(correct).tobytes()
                    for sd in range(seeds):
                        rows.append((f"step{step}", int(step), "pos", layer, src, tgt, sd, "accuracy",
                                     float(correct.mean()), 0.3, 5000, words, True, packed, groups))
    cols = ["checkpoint", "step", "task", "layer", "src_lang", "tgt_lang", "seed", "metric", "value", "baseline",
            "n_train", "n_test", "seed_invariant", "correct", "item_groups"]
    return pd.DataFrame(rows, columns=cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", action="store_true", help="4 languages, 3 layers, 10 checkpoints (a quick look)")
    ap.add_argument("--cpus", type=int, nargs="*", default=[1, 2], help="Ray CPUs for the parallel runs")
    args = ap.parse_args()
    import ray

    from xlp.analysis.reduce import reduce
    from xlp.config import AnalysisSpec
    from xlp.run.parallel import parallel_reduce
    from xlp.tasks import get_task

    probes = (synthetic_probes(langs=LANGS[:4], steps=STEPS[::4], layers=3, targets=3) if args.small
              else synthetic_probes())
    tasks = {"pos": get_task("pos")}
    a = AnalysisSpec()
    print(f"{len(probes):,} probe rows, {probes.groupby(['layer', 'src_lang', 'tgt_lang']).ngroups:,} curves, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t = time.perf_counter()
    serial = reduce(probes, a, tasks)
    t_serial = time.perf_counter() - t
    print(f"serial reducer (one process)         : {t_serial:7.1f} s")
    for cpus in args.cpus:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="warning",
                 log_to_driver=False)
        try:
            t = time.perf_counter()
            parallel = parallel_reduce(probes, a, tasks)
            t_par = time.perf_counter() - t
        finally:
            ray.shutdown()
        same = all(serial.tables()[k].equals(parallel.tables()[k]) for k in serial.tables())
        print(f"curves as Ray tasks, Ray with {cpus} CPU(s): {t_par:7.1f} s ({t_serial / t_par:.2f}x the serial; "
              f"same tables: {same})")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

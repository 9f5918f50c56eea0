"""Word alignment per layer of one checkpoint on the shared gold sets (SimAlign's ArgMax and IterMax,
and the diagonal baseline): prints precision, recall, F1 and AER per (pair, layer, method).

    python benchmarks/align_minilm.py [--model DIR] [--pairs enfr zhen] [--pooling mean] [--sentences N]
"""

from __future__ import annotations

import argparse
import time

from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.paths import shared_dir
from xlp.tasks.align import align_rows, read_pair


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(shared_dir() / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--pairs", nargs="+", default=["enfr", "zhen"])
    ap.add_argument("--pooling", default="mean", choices=["first", "mean", "last"])
    ap.add_argument("--sentences", type=int, default=None)
    args = ap.parse_args()
    ex = FeatureExtractor(Checkpoint(0, args.model), layers="all", pooling=args.pooling)
    for pair in args.pairs:
        gold = read_pair(shared_dir() / "alignment", pair, max_sentences=args.sentences)
        start = time.perf_counter()
        rows = align_rows(ex, gold)
        print(f"\n{pair}: {len(gold)} sentences, pooling {args.pooling}, {time.perf_counter() - start:.1f} s")
        print(f"{'layer':>5} {'method':>9} {'P':>6} {'R':>6} {'F1':>6} {'AER':>6}")
        for r in sorted(rows, key=lambda r: (r["method"] == "diagonal", r["method"], r["layer"])):
            if r["method"] == "diagonal" and r["layer"] != 0:
                continue  # the baseline reads no vectors: the same at every layer
            layer = "-" if r["method"] == "diagonal" else r["layer"]
            print(f"{layer:>5} {r['method']:>9} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} "
                  f"{r['aer']:6.3f}")


if __name__ == "__main__":
    main()

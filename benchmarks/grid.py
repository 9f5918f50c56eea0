"""End to end on one grid: the pipeline a researcher writes by hand vs `xlp launch`, in one process.

Grid: MiniLM, POS, English and German, every layer, each language's probe scored on both (in-language
and cross-lingual). By hand: padded batches in file order with `output_hidden_states`, every layer of
every word copied to Python, then scikit-learn's LogisticRegression one probe at a time (standardised
features, C = 1 / (l2 n), lbfgs to the same gradient tolerance as xlp's probe; a feature's scale is
floored at xlp's SCALE_FLOOR, as in xlp). xlp: a spec run
through `xlp.run.driver.launch` (local Ray, Parquet features, ledger, report). Prints both
times, the ratio, and the accuracy difference of every cell (layer x source x target). Then the extract stage
inside the run (words over the busy time of its units, from the ledger), and its units that ran every batch on
one thread count, by their time on the model and with their shards' writes (load excluded), against xlp's
extractor in this process on the same splits with as many threads (FeatureExtractor; 1 and every core; the
splits' rates differ: German test sentences are slower per word than English ones). xlp runs at its default
precision (auto: bfloat16 where the CPU computes it natively; `--precision float32` for the by-hand pipeline's
arithmetic).

    python benchmarks/grid.py [--train 2000] [--test 1000] [--small] [--layers 1 2 3 4 5 6] [--seeds 0 1 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import yaml
from naive import naive_word_vectors  # benchmarks/naive.py: the shared hand-written baseline
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from transformers import AutoModel, AutoTokenizer

from xlp.config import ProbeSpec, load_spec
from xlp.data.conllu import read_conllu
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.paths import shared_dir
from xlp.probing.linear import SCALE_FLOOR
from xlp.run.driver import launch
from xlp.run.status import busy_seconds

# what xlp's plan picks with train_split: train (these treebanks have no train file here: dev instead)
FILES = {"en": ("UD_English-EWT/en_ewt-ud-dev.conllu", "UD_English-EWT/en_ewt-ud-test.conllu"),
         "de": ("UD_German-GSD/de_gsd-ud-dev.conllu", "UD_German-GSD/de_gsd-ud-test.conllu")}


def by_hand(model_dir: str, data: dict, l2: float, tol: float,
            layers: list[int] | None = None) -> dict[tuple[int, str, str], float]:
    """Accuracy per (layer, source, target), the way one writes it without a tool (one fit per layer and source:
    lbfgs is deterministic, so probe seeds would only repeat it)."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    feats = {}
    for key, sentences in data.items():
        rows = list(naive_word_vectors(tok, model, sentences))  # per word, per layer
        labels = [t for s in sentences for t in s.upos]
        feats[key] = (rows, labels)
    acc = {}
    n_layers = len(feats[("en", "train")][0][0])
    for layer in layers or range(n_layers):
        for src in ("en", "de"):
            rows, y = feats[(src, "train")]
            X = np.array([r[layer] for r in rows], dtype=np.float32)
            scaler = StandardScaler().fit(X)
            # the same standardisation as xlp's: MiniLM's last layer has a dimension that is float
            # rounding noise (|x| <= 1.2e-7); StandardScaler would blow it up to unit variance
            scaler.scale_ = np.maximum(scaler.scale_, SCALE_FLOOR)
            clf = LogisticRegression(C=1 / (l2 * len(y)), tol=tol, max_iter=1000).fit(scaler.transform(X), y)
            for tgt in ("en", "de"):
                rows_t, yt = feats[(tgt, "test")]
                Xt = np.array([r[layer] for r in rows_t], dtype=np.float32)
                acc[(layer, src, tgt)] = float((clf.predict(scaler.transform(Xt)) == np.array(yt)).mean())
    return acc


def with_xlp(model_dir: str, out: Path, args) -> dict[tuple[int, str, str], float]:
    spec_file = out.parent / "grid.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "grid", "output": str(out), "checkpoints": [{"path": model_dir, "step": 0}],
        "data": {"ud_root": str(shared_dir() / "ud"), "languages": ["en", "de"],
                 "max_train_sentences": args.train, "max_test_sentences": args.test},
        "tasks": ["pos"], "layers": args.layers or "all",
        "probe": {"seeds": args.seeds, "l2": args.l2, "tol": args.tol}, "precision": args.precision,
        "cluster": {"num_cpus": args.cpus}}))
    result = launch(load_spec(spec_file), quiet=True)
    assert not result.failed, result.failed
    df = pq.read_table(out / "results/probes.parquet").to_pandas()
    extract = [json.loads(p.read_text()) for p in (out / "ledger" / "extract").rglob("*.json")]
    stage = (sum(r["rows"] for r in extract) / busy_seconds(extract), extract)
    return {(int(r.layer), r.src_lang, r.tgt_lang): float(r.value) for r in df.itertuples()}, stage


def in_process(model_dir: str, data: dict, layers: list[int] | None, threads: int,
               precision: str) -> dict[tuple[str, str], float]:
    """Words per second of xlp's extractor in this process with `threads` torch threads, per (language, split)."""
    torch.set_num_threads(threads)
    ex = FeatureExtractor(Checkpoint(0, model_dir), layers=layers or "all", precision=precision)
    ex.extract([s.forms for s in next(iter(data.values()))[:20]])  # warm
    out = {}
    for key, sentences in data.items():
        t = time.perf_counter()
        ex.extract([s.forms for s in sentences])
        out[key] = sum(len(s.forms) for s in sentences) / (time.perf_counter() - t)
    return out


def units_at(extract: list[dict], threads: int, alone: dict[tuple[str, str], float]) -> tuple[int, float, float, float]:
    """Of the run's extraction units that ran every batch with `threads`: (words, seconds on the model, seconds less
    the model's load, which include the shard's write that overlaps the next unit's time on the model, and the
    seconds the extractor alone in this process takes for the same splits at its rate on each)."""
    same = [r for r in extract if r["threads"] == r.get("threads_least", r["threads"]) == threads]
    role = {"dev": "train", "test": "test"}  # a unit's split file -> its role here (FILES: dev files train)
    parts = [dict(p.split("=", 1) for p in r["key"].split("/")) for r in same]
    return (sum(r["rows"] for r in same), sum(r["model_seconds"] for r in same),
            sum(r["seconds"] - r.get("load_seconds", 0.0) for r in same),
            sum(r["rows"] / alone[(p["lang"], role[p["split"]])] for r, p in zip(same, parts)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--small", action="store_true", help="300 train / 150 test sentences (a quick look)")
    ap.add_argument("--l2", type=float, default=ProbeSpec().l2)
    ap.add_argument("--tol", type=float, default=ProbeSpec().tol, help="gradient tolerance of both probes")
    ap.add_argument("--cpus", type=int, default=None, help="CPUs of xlp's local Ray node (default: all)")
    ap.add_argument("--layers", type=int, nargs="*", default=None, help="layers to probe (default: all)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0], help="xlp's probe seeds")
    ap.add_argument("--precision", default="auto", help="xlp's model arithmetic (auto: bfloat16 where native)")
    ap.add_argument("--rounds", type=int, default=1, help="by hand and xlp in turn, this many times (the last "
                    "round's results and ledger are compared)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds: at least 1")
    if args.small:
        args.train, args.test = 300, 150
    model_dir = str(shared_dir() / "models" / "all-MiniLM-L6-v2")
    ud = shared_dir() / "ud"
    data = {(lang, split): read_conllu(ud / path, args.train if split == "train" else args.test)
            for lang, paths in FILES.items() for split, path in zip(("train", "test"), paths)}

    rounds = []  # (by hand, xlp) seconds, in turn: on a machine whose speed drifts, one pair is one sample
    for _ in range(args.rounds):
        t = time.perf_counter()
        hand = by_hand(model_dir, data, args.l2, args.tol, args.layers)
        t_hand = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            ours, (stage_wps, extract) = with_xlp(model_dir, Path(tmp) / "run", args)
            rounds.append((t_hand, time.perf_counter() - t))
    alone = {n: in_process(model_dir, data, args.layers, n, args.precision) for n in (1, os.cpu_count() or 1)}
    used = sorted({r["precision"] for r in extract})
    words = {k: sum(len(s.forms) for s in v) for k, v in data.items()}
    print(f"grid: MiniLM, POS, en+de, layers {args.layers or 'all'}, xlp seeds {args.seeds}; {args.train} train / "
          f"{args.test} test sentences; words "
          + ", ".join(f"{lang}-{split} {n:,}" for (lang, split), n in words.items()))
    for i, (t_hand, t_xlp) in enumerate(rounds):
        print(f"by hand (padded batches, layers copied to Python, scikit-learn per probe): {t_hand:8.1f} s")
        print(f"xlp launch (Ray, Parquet, ledger, report, batched L-BFGS):                {t_xlp:8.1f} s (model "
              f"arithmetic {'/'.join(used)}: precision {args.precision}; by hand float32)")
        print(f"speed-up {t_hand / t_xlp:.1f}x" + (f" (round {i + 1} of {len(rounds)})" if len(rounds) > 1 else ""))
    if len(rounds) > 1:
        ratios = sorted(h / x for h, x in rounds)
        print(f"speed-up over {len(rounds)} rounds: median {float(np.median(ratios)):.2f}x, "
              f"{ratios[0]:.2f}-{ratios[-1]:.2f}x")
    print(f"extract stage in the run: {stage_wps:,.0f} words/s over its busy time (model load included; threads "
          f"per unit {sorted((r['threads_least'], r['threads']) for r in extract)}: fits take cores as shards arrive)")
    for n, rates in alone.items():
        words_n, on_model, with_writes, expected = units_at(extract, n, rates)
        overall = sum(len(s.forms) for v in data.values() for s in v) / sum(
            sum(len(s.forms) for s in v) / rates[k] for k, v in data.items())
        if words_n:
            print(f"  units that ran all on {n} thread(s): {words_n / on_model:,.0f} words/s on the model, "
                  f"{words_n / with_writes:,.0f} with their shards' writes (load excluded); xlp's extractor in this "
                  f"process on the same splits, {n} thread(s): {words_n / expected:,.0f} words/s "
                  f"({expected / on_model:.0%}, {expected / with_writes:.0%}; all four splits {overall:,.0f})")
        else:
            print(f"  no unit ran all on {n} thread(s); xlp's extractor in this process: {overall:,.0f} words/s")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("accuracy, xlp minus by hand, in points (layer: en->en en->de de->en de->de)")
    cells = [(s, t) for s in ("en", "de") for t in ("en", "de")]
    worst = 0.0
    for layer in sorted({k[0] for k in hand}):
        diffs = [100 * (ours[(layer, s, t)] - hand[(layer, s, t)]) for s, t in cells]
        worst = max(worst, *map(abs, diffs))
        print(f"  layer {layer}: " + "  ".join(f"{d:+6.2f}" for d in diffs)
              + "   (by hand " + " ".join(f"{hand[(layer, s, t)]:.4f}" for s, t in cells) + ")")
    print(f"largest difference {worst:.2f} points")


if __name__ == "__main__":
    main()

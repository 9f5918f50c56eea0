"""Extraction and storage: the naive loop a researcher writes by hand vs xlp's extraction path, in one
process, on the same checkpoint, sentences and layers; prints words/s, the ratio, the largest
difference between the two outputs; then a shard's Parquet write and read speed with its vectors stored as
lists of values (the plain way) and as raw bytes (xlp's).

    python benchmarks/extraction.py [--sentences 1000] [--model DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from naive import naive_word_vectors  # benchmarks/naive.py: the shared hand-written baseline
from transformers import AutoModel, AutoTokenizer

from xlp.data.conllu import read_conllu
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.paths import shared_dir
from xlp.storage.features import PARQUET_OPTIONS, features_table, vectors


def naive(model_dir: str, sentences, out: Path) -> dict[int, np.ndarray]:
    """Padded batches in file order, every layer copied out, Python loops per word, pandas to Parquet."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    rows = [{f"layer_{layer}": v for layer, v in enumerate(vecs)} for vecs in naive_word_vectors(tok, model, sentences)]
    df = pd.DataFrame(rows)
    df.to_parquet(out)
    return {int(c.split("_")[1]): np.array(df[c].tolist(), dtype=np.float32) for c in df.columns}


def fast(model_dir: str, sentences, out: Path) -> dict[int, np.ndarray]:
    ex = FeatureExtractor(Checkpoint(0, model_dir), layers="all")
    vecs = ex.extract([s.forms for s in sentences])
    pq.write_table(features_table(sentences, vecs), out, **PARQUET_OPTIONS)
    return vecs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--model", default=str(shared_dir() / "models" / "all-MiniLM-L6-v2"))
    args = ap.parse_args()
    sents = read_conllu(shared_dir() / "ud" / "UD_English-EWT" / "en_ewt-ud-dev.conllu", args.sentences)
    n = sum(len(s.forms) for s in sents)
    tmp = Path(tempfile.mkdtemp())
    fast(args.model, sents[:20], tmp / "warm.parquet")  # load libraries once before timing either
    t = time.perf_counter()
    ref = naive(args.model, sents, tmp / "naive.parquet")
    t_naive = time.perf_counter() - t
    t = time.perf_counter()
    ours = fast(args.model, sents, tmp / "xlp.parquet")
    t_fast = time.perf_counter() - t
    diff = max(float(np.abs(ours[k].astype(np.float32) - ref[k]).max()) for k in ref)
    print(f"model {Path(args.model).name}, {len(sents)} sentences, {n} words, {len(ref)} layers, "
          f"{torch.get_num_threads()} torch threads")
    print(f"naive loop (padded batches, pandas): {n / t_naive:10,.0f} words/s")
    print(f"xlp extraction path                : {n / t_fast:10,.0f} words/s")
    print(f"speed-up                           : {t_naive / t_fast:10.2f}x")
    print(f"max |xlp - naive| over all features: {diff:.2e} (float16 storage)")

    table = pq.read_table(tmp / "xlp.parquet")
    raw = n * len(ours) * ours[0].shape[1] * 2
    print(f"Parquet shard of {raw / 2**20:.1f} MiB of float16 vectors, written 3x and read back 3x into float32 "
          "matrices:")
    times = {name: shard_speed(t, tmp / f"{name}.parquet", list(ours)) for name, t in
             (("fixed-size list per vector (plain)", as_lists(table)), ("raw bytes per vector (xlp)", table))}
    for name, (write, read, size) in times.items():
        print(f"  {name:35s}: write {raw / write / 2**20:7,.0f} MB/s, read {raw / read / 2**20:7,.0f} MB/s, "
              f"{size / raw - 1:+.1%} size")
    (w0, r0, _), (w1, r1, _) = times.values()
    print(f"  raw / list: write {w0 / w1:.1f}x, read {r0 / r1:.1f}x faster")


def as_lists(table: pa.Table) -> pa.Table:
    """The same shard with each layer as a Parquet list of float16 values (how xlp stored them before)."""
    for i, field in enumerate(table.schema):
        if field.name.startswith("layer_"):
            v = vectors(table, field.name).astype(np.float16)
            table = table.set_column(i, field.name, pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)),
                                                                                       v.shape[1]))
    return table


def shard_speed(table: pa.Table, path: Path, layers: list[int]) -> tuple[float, float, int]:
    t = time.perf_counter()
    for _ in range(3):
        pq.write_table(table, path, **PARQUET_OPTIONS)
    write = (time.perf_counter() - t) / 3
    t = time.perf_counter()
    for _ in range(3):
        back = pq.read_table(path)
        _ = [vectors(back, f"layer_{k}") for k in layers]
    return write, (time.perf_counter() - t) / 3, path.stat().st_size


if __name__ == "__main__":
    main()

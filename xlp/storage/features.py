"""Word-feature shards: one row per word, labels plus one column per layer holding each word's vector as
its raw bytes (fixed-size binary; the field's metadata names the dtype and the size). Parquet encodes a
fixed-size list value by value with repetition levels; raw vectors write about 3x and read about 2.6x
faster (benchmarks/extraction.py), and `vectors` reads both (shards of earlier versions are lists).

Layout: RUN/features/step=S/lang=L/split=X/part-0.parquet (Hive-partitioned).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa


def shard_path(step: int, lang: str, split: str) -> str:
    return f"features/step={step}/lang={lang}/split={split}/part-0.parquet"


def layer_column(layer: int) -> str:
    return f"layer_{layer}"


def features_table(sentences: Sequence, layer_vectors: dict[int, np.ndarray], dtype: str = "float16") -> pa.Table:
    """Build the shard table from sentences (xlp.data.conllu.Sentence) and per-layer (n_words, d) arrays."""
    lengths = np.fromiter((len(s.forms) for s in sentences), dtype=np.int64, count=len(sentences))
    n = int(lengths.sum())
    sent_idx = np.repeat(np.arange(len(sentences), dtype=np.int32), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    word_id = (np.arange(n) - starts + 1).astype(np.int32)
    columns = {
        "sent_idx": pa.array(sent_idx),
        "sent_id": pa.array([s.sent_id for s in sentences for _ in s.forms], pa.string()),
        "word_id": pa.array(word_id),
        "form": pa.array([f for s in sentences for f in s.forms], pa.string()),
        "upos": pa.array([t for s in sentences for t in s.upos], pa.string()),
        "feats": pa.array([f for s in sentences for f in s.feats], pa.string()),
        "head": pa.array(np.fromiter((h for s in sentences for h in s.heads), dtype=np.int32, count=n)),
        "deprel": pa.array([d for s in sentences for d in s.deprels], pa.string()),
    }
    fields = [pa.field(name, array.type) for name, array in columns.items()]
    for layer, vecs in sorted(layer_vectors.items()):
        if vecs.shape[0] != n:
            raise ValueError(f"layer {layer}: {vecs.shape[0]} vectors for {n} words")
        raw = np.ascontiguousarray(vecs, dtype=dtype)
        width = raw.shape[1] * raw.itemsize
        columns[layer_column(layer)] = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width), n, [None, pa.py_buffer(raw.reshape(-1).view(np.uint8))])
        fields.append(pa.field(layer_column(layer), pa.binary(width),
                               metadata={"dtype": raw.dtype.name, "size": str(raw.shape[1])}))
    return pa.Table.from_arrays(list(columns.values()), schema=pa.schema(fields))


PARQUET_OPTIONS = dict(
    compression="zstd", compression_level=1,
    use_dictionary=["sent_id", "upos", "feats", "deprel"],
    write_statistics=["sent_idx", "word_id"],
)


def resample_sentences(table: pa.Table, rng: np.random.Generator) -> pa.Table:
    """A bootstrap resample of a shard's sentences: as many sentences as it has, drawn with replacement;
    each draw is a sentence of its own (a new sent_idx), so examples within a sentence stay whole."""
    sent = table.column("sent_idx").to_numpy()
    starts = np.flatnonzero(np.r_[True, sent[1:] != sent[:-1]]) if len(sent) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(sent)]
    draw = rng.integers(0, len(starts), len(starts))
    rows = np.concatenate([np.arange(starts[d], ends[d]) for d in draw]) if len(draw) else np.zeros(0, np.int64)
    out = table.take(pa.array(rows))
    renumbered = np.repeat(np.arange(len(draw), dtype=np.int32), ends[draw] - starts[draw])
    return out.set_column(out.schema.get_field_index("sent_idx"), "sent_idx", pa.array(renumbered))


def stored_vectors(table: pa.Table, column: str) -> np.ndarray:
    """The (n_words, d) matrix of one layer column in the dtype it is stored in (a view of Arrow's buffer where it
    is one chunk), without per-row Python."""
    chunks = _chunk_vectors(table, column)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _chunk_vectors(table: pa.Table, column: str) -> list[np.ndarray]:
    """Views of one layer column's chunks (Parquet's row groups), each (rows, d) in the stored dtype."""
    col = table.column(column)
    if pa.types.is_fixed_size_list(col.type):
        size = col.type.list_size
        return [c.flatten().to_numpy(zero_copy_only=False).reshape(-1, size) for c in col.chunks] or [
            np.zeros((0, size), dtype=col.type.value_type.to_pandas_dtype())]
    meta = table.schema.field(column).metadata or {}
    if b"dtype" not in meta:
        raise ValueError(f"column {column}: no dtype in its field metadata (not a feature shard's layer column)")
    dtype, d = np.dtype(meta[b"dtype"].decode()), int(meta[b"size"])
    width = col.type.byte_width
    out = [np.frombuffer(c.buffers()[1], dtype=np.uint8)[c.offset * width:(c.offset + len(c)) * width]
           .view(dtype).reshape(len(c), d) for c in col.chunks if len(c)]
    return out or [np.zeros((0, d), dtype=dtype)]


def vectors(table: pa.Table, column: str) -> np.ndarray:
    """The (n_words, d) float32 matrix of one layer column."""
    return stored_vectors(table, column).astype(np.float32)


def layer_stack(table: pa.Table, columns: list[str], dtype: str | None = "float32") -> np.ndarray:
    """(L, n_words, d) features of several layer columns in `dtype` (None: as stored, float16 in a shard xlp
    writes; the probes convert a layer at a time), each row group of each layer converted straight into its place
    (combining a column's chunks, converting it and stacking the layers are each a full copy: seconds on a large
    shard)."""
    layers = [_chunk_vectors(table, col) for col in columns]
    if not layers:
        return np.zeros((0, 0, 0), dtype=dtype or np.float32)
    first = layers[0][0]
    out = np.empty((len(layers), sum(len(c) for c in layers[0]), first.shape[1]), dtype=dtype or first.dtype)
    for i, chunks in enumerate(layers):  # chunk by chunk into place: no combined copy of a column first
        at = 0
        for c in chunks:
            out[i, at:at + len(c)] = c
            at += len(c)
    return out


def capped_sentences(table: pa.Table, max_words: int, rng: np.random.Generator) -> pa.Table:
    """Whole sentences of a shard, taken in an order drawn by `rng` while their words stay within `max_words`
    (for probes whose items are sentences: a word cap must not cut one), kept in their shard order."""
    sent = table.column("sent_idx").to_numpy()
    ids, lengths = np.unique(sent, return_counts=True)
    order = rng.permutation(len(ids))
    taken = ids[order[np.cumsum(lengths[order]) <= max_words]]
    return table.filter(pa.array(np.isin(sent, taken)))

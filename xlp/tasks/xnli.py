"""XNLI: sentence-pair classification (entailment / neutral / contradiction) with a linear probe on
frozen sentence vectors: [u; v; |u - v|; u * v] of the mean-pooled premise u and hypothesis v at a
layer. Probes train on a language's dev split and are scored on every language's test split, from
the official layout: XNLI-1.0/xnli.{dev,test}.tsv with columns language, gold_label, sentence1,
sentence2. No data means the task is not run (a note), never an error."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from xlp.errors import XlpError

NAME = "xnli"
METRIC = "accuracy"
SPLITS = ("dev", "test")
COLUMNS = {"language", "gold_label", "sentence1", "sentence2"}


def xnli_file(root: str | Path, split: str) -> Path:
    root = Path(root)
    return root / f"xnli.{split}.tsv" if (root / f"xnli.{split}.tsv").is_file() else root / "XNLI-1.0" / f"xnli.{split}.tsv"


def available(root: str | None) -> bool:
    return bool(root) and all(xnli_file(root, s).is_file() for s in SPLITS)


def read_xnli(root: str | Path, split: str, langs: list[str], cap: int | None) -> dict[str, tuple[list, list, np.ndarray]]:
    """Per language: premises, hypotheses and gold labels of one split (the first `cap` pairs)."""
    path = xnli_file(root, split)
    out: dict[str, tuple[list, list, list]] = {}
    csv.field_size_limit(1 << 24)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if not COLUMNS <= set(reader.fieldnames or ()):
                raise XlpError(f"{path}:1: expected the columns {sorted(COLUMNS)} of XNLI's TSV layout")
            for n, row in enumerate(reader, 2):
                lang = row["language"]
                if lang not in langs:
                    continue
                p, h, y = out.setdefault(lang, ([], [], []))
                if cap is not None and len(y) >= cap:
                    continue
                if None in (row["sentence1"], row["sentence2"], row["gold_label"]):
                    raise XlpError(f"{path}:{n}: a row with missing fields")
                p.append(row["sentence1"])
                h.append(row["sentence2"])
                y.append(row["gold_label"])
    except OSError as e:
        raise XlpError(f"data.xnli: cannot read {path}: {e.strerror}") from None
    return {lang: (p, h, np.asarray(y)) for lang, (p, h, y) in out.items()}


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=-1)

"""XNLI 1.0 in its official TSV layout (xnli.dev.tsv, xnli.test.tsv; language, gold_label, sentence1,
sentence2 columns), or `facebook/xnli`'s layout through `datasets` (a config per language; premise, hypothesis,
label 0/1/2), read per language into the same pairs and label names."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from xlp.data.hub import DatasetSplit, read_columns
from xlp.data.published import XNLI_LABELS
from xlp.data.text import decode
from xlp.errors import XlpError

SPLITS = ("dev", "test")
COLUMNS = {"language", "gold_label", "sentence1", "sentence2"}


def xnli_file(root: str | Path, split: str) -> Path:
    root = Path(root)
    flat = root / f"xnli.{split}.tsv"
    return flat if flat.is_file() else root / "XNLI-1.0" / f"xnli.{split}.tsv"


def available(root: str | None) -> bool:
    return bool(root) and all(xnli_file(root, s).is_file() for s in SPLITS)


def read_xnli(root: str | Path, split: str, langs: list[str] | None,
              cap: int | None) -> dict[str, tuple[list, list, np.ndarray]]:
    """Per language (every one when `langs` is None): premises, hypotheses and gold labels of one split
    (the first `cap` pairs)."""
    return read_xnli_file(xnli_file(root, split), langs, cap)


def read_xnli_file(path: Path, langs: list[str] | None, cap: int | None) -> dict[str, tuple[list, list, np.ndarray]]:
    """One split's pairs per language. A byte-order mark, Windows line ends and a last line without its newline
    read as the same rows; UTF-16 and bytes that are not UTF-8 are refused by file and line."""
    out: dict[str, tuple[list, list, list]] = {}
    csv.field_size_limit(1 << 24)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise XlpError(f"xnli.path: cannot read {path}: {e.strerror}") from None
    reader = csv.DictReader(io.StringIO(decode(raw, path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    if not COLUMNS <= set(reader.fieldnames or ()):
        raise XlpError(f"{path}:1: expected the columns {sorted(COLUMNS)} of XNLI's TSV layout")
    for n, row in enumerate(reader, 2):
        lang = row["language"]
        if langs is not None and lang not in langs:
            continue
        p, h, y = out.setdefault(lang, ([], [], []))
        if cap is not None and len(y) >= cap:
            continue
        if None in (row["sentence1"], row["sentence2"], row["gold_label"]):
            raise XlpError(f"{path}:{n}: a row with missing fields")
        p.append(row["sentence1"])
        h.append(row["sentence2"])
        y.append(row["gold_label"])
    return {lang: (p, h, np.asarray(y)) for lang, (p, h, y) in out.items()}


Pairs = dict[str, tuple[list, list, np.ndarray]]


def read_xnli_dataset(parts: dict[str, tuple[DatasetSplit, DatasetSplit]], columns: dict[str, str],
                      caps: tuple[int | None, int | None]) -> dict[str, Pairs]:
    """Per split ("dev", "test"), per language: premises, hypotheses and label names (XNLI-1.0's gold_label) of a
    `facebook/xnli`-layout dataset, its validation split as the dev split; `columns` names its premise,
    hypothesis and label columns."""
    out: dict[str, Pairs] = {"dev": {}, "test": {}}
    for lang, splits in parts.items():
        for split, part, cap in zip(SPLITS, splits, caps):
            rows = read_columns(part, columns, cap, "xnli.dataset")
            labels = [XNLI_LABELS[y] if isinstance(y, int) and 0 <= y < len(XNLI_LABELS) else y for y in rows["label"]]
            bad = [y for y in labels if y not in XNLI_LABELS]
            if bad:
                raise XlpError(f"xnli.dataset: {part.where} has a label {bad[0]!r}; expected 0, 1, 2 or "
                               f"{', '.join(XNLI_LABELS)}")
            out[split][lang] = (rows["premise"], rows["hypothesis"], np.asarray(labels))
    return out

"""The `align` task: unsupervised word alignment in the manner of SimAlign (xlp/probing/simalign.py) of each
gold sentence pair's words at every layer, scored against human links (xlp/data/alignment.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, field_validator

from xlp.data.alignment import GoldSentence, pair_files, read_gold
from xlp.errors import XlpError
from xlp.hashing import data_files
from xlp.paths import shared_dir
from xlp.probing.simalign import (
    BASELINE,
    METHODS,
    Method,
    check_methods,
    diagonal_counts,
    score_layers,
    scores_from_sums,
    split_sentences,
)
from xlp.tasks.base import Runtime, SentenceInputs, SentenceTask, TaskContext, TaskOptions, seed_rows

if TYPE_CHECKING:
    from xlp.models.extract import FeatureExtractor

NAME = "align"


def align_rows(extractor: FeatureExtractor, gold: Sequence[GoldSentence],
               methods: Sequence[str] = METHODS) -> list[dict]:
    """With a loaded FeatureExtractor (its layers and pooling): one row per (layer, method) with
    precision, recall, F1, AER and the number of sentences, plus the diagonal baseline's row at every
    layer (the same scores: it reads no vectors) so each layer's table has what to beat. Both sides of
    every sentence go through the model in one extraction call."""
    check_methods(methods)
    lengths = [len(g.src) for g in gold] + [len(g.tgt) for g in gold]
    vectors = extractor.extract([list(g.src) for g in gold] + [list(g.tgt) for g in gold])
    per_layer = {layer: split_sentences(v, lengths) for layer, v in vectors.items()}
    n = len(gold)
    counts = score_layers({k: v[:n] for k, v in per_layer.items()}, {k: v[n:] for k, v in per_layer.items()},
                          gold, methods)
    baseline = diagonal_counts(gold).scores()
    rows = []
    for layer, by_method in counts.items():
        for method, c in by_method.items():
            rows.append({"layer": layer, "method": method, **c.scores(), "n_sentences": n, "counts": c})
        rows.append({"layer": layer, "method": BASELINE, **baseline, "n_sentences": n})
    return rows


def pair_languages(pair: str) -> tuple[str, str]:
    """`enfr` or `en-fr` -> ("en", "fr")."""
    src, sep, tgt = pair.partition("-")
    if not sep:
        src, tgt = pair[:2], pair[2:]
    if not (re.fullmatch(r"[a-z]{2,3}", src) and re.fullmatch(r"[a-z]{2,3}", tgt)):
        raise XlpError(f"{pair!r} is not a language pair such as enfr or en-fr")
    return src, tgt


class AlignOptions(TaskOptions):
    """The gold data: a folder of `<pair>.src-tgt` / `<pair>.gold` files (the layout of ${XLP_SHARED}/alignment),
    or explicit [sentences, gold] file pairs per pair name; older specs call this section `alignment`."""

    gold: str = Field(default_factory=lambda: str(shared_dir() / "alignment"))
    pairs: list[str] = Field(["enfr", "zhen"], min_length=1, description="XXYY or xx-yy: source then target")
    files: dict[str, tuple[str, str]] = Field({}, description="pair -> [sentence file, gold file]")
    one_indexed: bool = True
    method: Method = "argmax"
    max_sentences: int | None = Field(None, ge=1)

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, pairs: list[str]) -> list[str]:
        for pair in pairs:
            try:
                pair_languages(pair)
            except XlpError as e:
                raise ValueError(str(e)) from None
        return pairs


class AlignTask(SentenceTask):
    name = NAME
    Options = AlignOptions
    legacy_keys = {"alignment": None}
    metric = "f1"
    reads_ud = False  # its pairs are alignment.pairs
    definition = ("unsupervised word alignment in the manner of SimAlign: each sentence pair's words (the corpus's "
                  "space-separated tokens, with the run's subword pooling) are aligned from the cosine similarity of "
                  "their vectors at a layer, with no training (argmax: links that are each other's best match in "
                  "both directions; itermax: its iterative variant; alignment.method); F1 of precision against "
                  "sure and possible gold links and recall against sure ones, counts summed over the corpus; "
                  "precision, recall and AER in their own columns; baseline = the diagonal aligner (each word to "
                  "the word at the same relative position of the other side).")

    @staticmethod
    def value_from_sums(sums: np.ndarray, count: int) -> np.ndarray:
        return scores_from_sums(*sums)["f1"]  # item_sums: each sentence's |A|, |A∩S|, |A∩P|, |S|

    def describe_grid(self, ctx: TaskContext, langs: list[str] | None) -> str:
        pairs = ctx.options.pairs
        return f"{len(pairs)} language pairs, source to target ({', '.join(pairs)})"

    def inputs(self, ctx: TaskContext, notes: list[str]) -> SentenceInputs | None:
        """Every gold file is read and checked now (pre-flight); the unit reads the same files again."""
        a = ctx.options
        paths: list[Path] = []
        for pair in a.pairs:
            text, gold = (Path(p) for p in a.files[pair]) if pair in a.files else pair_files(a.gold, pair)
            read_gold(text, gold, a.one_indexed, a.max_sentences)
            paths += [text, gold]
        files = data_files(paths)
        return SentenceInputs(langs=tuple(a.pairs), files=tuple(files[p] for p in paths), corpus="gold",
                              options=(("method", a.method), ("one_indexed", a.one_indexed),
                                       ("max_sentences", a.max_sentences), ("pooling", ctx.pooling)))

    def rows(self, unit, runtime: Runtime) -> list[dict]:
        """The checkpoint is loaded once for all pairs; both sides of a pair's sentences go through it in
        one extraction, then each layer's alignments are scored."""
        from xlp.models.extract import FeatureExtractor

        o = dict(unit.inputs.options)
        extractor = FeatureExtractor(unit.ckpt, list(unit.layers), o["pooling"], **runtime.model_options())
        rows = []
        for k, pair in enumerate(unit.langs):
            text, gold_file = (Path(f.path) for f in unit.inputs.files[2 * k: 2 * k + 2])
            gold = read_gold(text, gold_file, o["one_indexed"], o["max_sentences"])
            src, tgt = pair_languages(pair)
            scored = align_rows(extractor, gold, [o["method"]])
            baseline = next(r["f1"] for r in scored if r["method"] == BASELINE)
            for r in (r for r in scored if r["method"] == o["method"]):
                rows += seed_rows(unit, task=self.name, layer=r["layer"], src=src, tgt=tgt, metric=self.metric,
                                  value=r["f1"], baseline=baseline, n_train=0, n_test=len(gold), correct=None,
                                  pooling=extractor.pooling, item_sums=np.stack(astuple(r["counts"])),
                                  extra={"precision": r["precision"], "recall": r["recall"], "aer": r["aer"],
                                         "method": o["method"]})
        return rows

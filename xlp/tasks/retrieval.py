"""Cross-lingual sentence retrieval on parallel text: no probe. Each sentence is the mean of its
subword vectors at a layer; a source sentence retrieves its nearest target sentence by cosine, and
accuracy@1 is the share that find their own translation. Corpora: the UDHR or the PUD treebanks (parallel
across all languages: every pair), or Tatoeba as XTREME uses it (each language's own sentence pairs with
English, from a dataset in `mteb/tatoeba-bitext-mining`'s layout: each language to English and back)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from xlp.data.conllu import conllu_files, read_conllu, require_sentences
from xlp.data.hub import Dataset, DatasetSource, DatasetSplit, read_columns
from xlp.data.published import TATOEBA, TATOEBA_PIVOT
from xlp.errors import XlpError
from xlp.hashing import data_files
from xlp.paths import shared_dir
from xlp.tasks.base import Runtime, SentenceInputs, SentenceTask, TaskContext, TaskOptions, seed_rows


class RetrievalOptions(TaskOptions):
    corpus: Literal["udhr", "pud", "tatoeba"] = "udhr"
    udhr: str | None = Field(None, description="the UDHR TSV (lang, article, paragraph, text); default: XLP_SHARED's")
    max_sentences: int | None = Field(500, ge=2)
    dataset: DatasetSource | None = Field(None, description="for corpus tatoeba: mteb/tatoeba-bitext-mining's layout")

    @model_validator(mode="after")
    def _tatoeba_has_a_dataset(self) -> RetrievalOptions:
        if (self.corpus == "tatoeba") != (self.dataset is not None):
            raise ValueError("corpus `tatoeba` reads `dataset` (e.g. {hub: mteb/tatoeba-bitext-mining}), and "
                             "only it does")
        return self


class RetrievalTask(SentenceTask):
    name = "retrieval"
    Options = RetrievalOptions
    data_command = "tatoeba"
    metric = "accuracy@1"
    pairwise_only = True  # a sentence trivially retrieves itself: curves use the other languages
    reads_ud = False  # the UDHR, or the PUD treebanks found under the UD root for any language named
    definition = ("accuracy@1 of cosine nearest-neighbour search between mean-pooled subword vectors of parallel "
                  "sentences (special tokens left out; a text longer than the model's window is the mean over all "
                  "its windows); baseline = chance.")

    def inputs(self, ctx: TaskContext, notes: list[str]) -> SentenceInputs | None:
        """The corpus is read and aligned now (pre-flight); the unit reads the same files again."""
        r, langs = ctx.options, ctx.grid()[0]
        if r.corpus == "tatoeba":
            return _tatoeba_inputs(r, langs, notes)
        if r.corpus == "udhr":
            files = {lang: Path(r.udhr) if r.udhr else shared_dir() / "udhr" / "udhr.tsv" for lang in langs}
        else:
            found = {lang: conllu_files(ctx.run_data.ud_root, f"{lang}_pud-ud-test.conllu") for lang in langs}
            files = {lang: paths[0] for lang, paths in found.items() if paths}
        texts = _parallel(r.corpus, files, langs, r.max_sentences)
        missing = [lang for lang in langs if lang not in texts]
        if missing:
            notes.append(f"retrieval: no {r.corpus} text for {', '.join(missing)}; left out")
        digests = data_files(set(files.values()))
        return SentenceInputs(langs=tuple(texts), files=tuple(digests[files[lang]] for lang in texts), corpus=r.corpus,
                              options=(("max_sentences", r.max_sentences), ("sentence_vectors", SENTENCE_VECTORS)))

    def rows_per_unit(self, n_langs: int, n_layers: int, cross_lingual: bool) -> int:
        return n_layers * n_langs ** 2

    def rows(self, unit, runtime: Runtime) -> list[dict]:
        """Sentence vectors of every language's aligned text at every layer; accuracy@1 for each pair."""
        from xlp.models.extract import FeatureExtractor

        extractor = FeatureExtractor(unit.ckpt, list(unit.layers), **runtime.model_options())
        cap, tatoeba = unit.inputs.option("max_sentences"), unit.inputs.corpus == "tatoeba"
        if tatoeba:  # each language's own pairs with English, scored (lang, en) and (en, lang)
            sets = [dict(zip((lang, TATOEBA_PIVOT), _tatoeba_pairs(part, unit.inputs.option("columns"), cap)))
                    for lang, part in zip(unit.langs, unit.inputs.files)]
        else:  # one text parallel across every language, scored for every pair
            files = {lang: Path(f.path) for lang, f in zip(unit.langs, unit.inputs.files)}
            sets = [_parallel(unit.inputs.corpus, files, list(unit.langs), cap)]
        rows = []
        for texts in sets:
            vectors = {lang: extractor.sentence_means(lang_texts) for lang, lang_texts in texts.items()}
            n = len(next(iter(texts.values())))
            for layer in unit.layers:
                for src in texts:
                    for tgt in [t for t in texts if not (tatoeba and t == src)]:
                        hits = retrieval_hits(vectors[src][layer], vectors[tgt][layer])
                        rows += seed_rows(unit, task=self.name, layer=layer, src=src, tgt=tgt, metric=self.metric,
                                          value=hits.mean(), baseline=1.0 / n, n_train=0, n_test=n, correct=hits)
        return rows

    def describe_grid(self, ctx: TaskContext, langs: list[str] | None) -> str:
        if ctx.options.corpus == "tatoeba":
            others = [lang for lang in (langs or ctx.grid()[0]) if lang != TATOEBA_PIVOT]
            return f"{len(others)} languages to and from {TATOEBA_PIVOT} (Tatoeba)"
        return super().describe_grid(ctx, langs)


# how retrieval and XNLI pool a text (in their hashes, so outputs pooled another way are redone)
SENTENCE_VECTORS = "mean over the subwords of every window"


TATOEBA_COLUMNS = ("sentence1", "sentence2")  # the language's sentence, its English translation


def _tatoeba_inputs(r: RetrievalOptions, langs: list[str], notes: list[str]) -> SentenceInputs:
    """Each language's config of a Tatoeba-layout dataset (its pairs with English), resolved and read now."""
    ds, split = Dataset(r.dataset, "retrieval.dataset"), r.dataset.split or "test"
    notes.append(ds.describe())
    others = [lang for lang in langs if lang != TATOEBA_PIVOT]
    if not others:
        raise XlpError(f"retrieval: Tatoeba pairs each language with {TATOEBA_PIVOT}; name others than "
                       f"{TATOEBA_PIVOT} in task_grid.retrieval.languages or data.languages")
    parts = tuple(ds.split(ds.config_of(lang, TATOEBA), split) for lang in others)
    columns = {c: r.dataset.column(c) for c in TATOEBA_COLUMNS}
    for part in parts:
        _tatoeba_pairs(part, columns, r.max_sentences)
    return SentenceInputs(langs=tuple(others), files=parts, corpus="tatoeba", options=(
        ("max_sentences", r.max_sentences), ("sentence_vectors", SENTENCE_VECTORS), ("columns", columns)))


def _tatoeba_pairs(part: DatasetSplit, columns: dict[str, str], cap: int | None) -> tuple[list[str], list[str]]:
    """The first `cap` sentence pairs of one language's config: its sentences and their English translations."""
    rows = read_columns(part, columns, cap, "retrieval.dataset")
    lang, english = rows["sentence1"], rows["sentence2"]
    if len(lang) < 2:
        raise XlpError(f"retrieval.dataset: {part.where} has {len(lang)} sentence pair; retrieval needs two or more")
    return lang, english


def _parallel(corpus: str, files: dict[str, Path], langs: list[str], cap: int | None) -> dict[str, list[str]]:
    if corpus == "udhr":
        return parallel_udhr(next(iter(files.values())), langs, cap)
    return parallel_pud(files, langs, cap)


def parallel_udhr(path: Path, langs: list[str], cap: int | None) -> dict[str, list[str]]:
    """The UDHR paragraphs every language has, aligned by (article, paragraph)."""
    by_lang: dict[str, dict[tuple[str, str], str]] = {}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f, delimiter="\t"), 2):
                if None in row.values() or not {"lang", "article", "paragraph", "text"} <= row.keys():
                    raise XlpError(f"{path}:{n}: expected columns lang, article, paragraph, text")
                by_lang.setdefault(row["lang"], {})[(row["article"], row["paragraph"])] = row["text"]
    except OSError as e:
        raise XlpError(f"data.udhr: cannot read {path}: {e.strerror}") from None
    return _aligned(by_lang, langs, cap, str(path))


def parallel_pud(files: dict[str, Path], langs: list[str], cap: int | None) -> dict[str, list[str]]:
    """The Parallel UD test sentences (each language's `<lang>_pud-ud-test.conllu`), aligned by sent_id."""
    by_lang = {}
    for lang in langs:
        if lang in files:
            sents = read_conllu(files[lang])
            require_sentences(files[lang], sents)
            by_lang[lang] = {s.sent_id: s.text for s in sents}
    where = f"{Path(next(iter(files.values()))).parent.parent} (PUD treebanks)" if files else "the PUD treebanks"
    return _aligned(by_lang, langs, cap, where)


def _aligned(by_lang: dict[str, dict], langs: list[str], cap: int | None, where: str) -> dict[str, list[str]]:
    present = [lang for lang in langs if by_lang.get(lang)]
    if len(present) < 2:
        raise XlpError(f"retrieval: fewer than two of {langs} have parallel text in {where}")
    keys = sorted(set.intersection(*(set(by_lang[lang]) for lang in present)))[:cap]
    if not keys:
        raise XlpError(f"retrieval: the languages {present} share no aligned sentence in {where}")
    return {lang: [by_lang[lang][k] for k in keys] for lang in present}


def retrieval_hits(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """For each source row, whether its cosine nearest neighbour among the target rows is its own
    translation (the same row index); on a tie the first row wins."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sim = unit(src) @ unit(tgt).T
    return sim.argmax(1) == np.arange(len(src))

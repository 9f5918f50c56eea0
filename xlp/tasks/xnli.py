"""XNLI: sentence-pair classification (entailment / neutral / contradiction) with a linear probe on
frozen sentence vectors: [u; v; |u - v|; u * v] of the mean-pooled premise u and hypothesis v at a
layer. Probes train on a language's dev split and are scored on every language's test split, from
the official layout: XNLI-1.0/xnli.{dev,test}.tsv with columns language, gold_label, sentence1,
sentence2, or from `facebook/xnli` on the hub or a local copy of it (`xnli.dataset`: its validation split
is the dev split). No data means the task is not run (a note), never an error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from xlp.config import ProbeSpec
from xlp.data.hub import Dataset, DatasetSource, DatasetSplit
from xlp.data.xnli import SPLITS, available, read_xnli, read_xnli_dataset, read_xnli_file, xnli_file
from xlp.hashing import data_files
from xlp.tasks.base import Runtime, SentenceInputs, SentenceTask, TaskContext, TaskOptions, seed_rows
from xlp.tasks.retrieval import SENTENCE_VECTORS


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=-1)


class XnliOptions(TaskOptions):
    path: str | None = Field(None, description="the XNLI-1.0 folder (xnli.dev.tsv, xnli.test.tsv)")
    dataset: DatasetSource | None = Field(None, description="facebook/xnli's layout: on the hub, or a local copy")

    @model_validator(mode="after")
    def _one_source(self) -> XnliOptions:
        if self.dataset is not None and self.path is not None:
            raise ValueError("give `path` (XNLI-1.0's TSVs) or `dataset`, not both")
        if self.dataset is not None and self.dataset.split is not None:
            raise ValueError("dataset.split: XNLI trains on validation and tests on test, no split to choose")
        return self


DATASET_SPLITS = ("validation", "test")  # facebook/xnli's, read as XNLI-1.0's dev and test
COLUMNS = ("premise", "hypothesis", "label")


class XnliTask(SentenceTask):
    name = "xnli"
    Options = XnliOptions
    data_command = "xnli"
    legacy_keys = {"data.xnli": "path"}
    metric = "accuracy"
    reads_ud = False  # every language of its data, unless task_grid.xnli names some
    definition = ("premise/hypothesis pairs as [u; v; |u - v|; u * v] of mean-pooled sentence vectors; probes fit on a "
                  "language's dev split, scored on test splits; accuracy; baseline = the majority label.")

    def inputs(self, ctx: TaskContext, notes: list[str]) -> SentenceInputs | None:
        d, folder = ctx.data, ctx.options.path
        if ctx.options.dataset is not None:
            return self._dataset_inputs(ctx, notes)
        if not available(folder):
            notes.append("xnli: not run, no data (set xnli.path to the XNLI-1.0 folder with xnli.dev.tsv "
                         "and xnli.test.tsv)")
            return None
        dev = read_xnli(folder, "dev", None, d.max_train_sentences)  # pre-flight: read both now
        test = read_xnli(folder, "test", None, d.max_test_sentences)
        grid, sources, targets = ctx.grid(default=list(dict.fromkeys([*dev, *test])))
        langs = tuple(lang for lang in dict.fromkeys([*grid, *sources, *targets]) if lang in dev or lang in test)
        if not any(lang in dev for lang in langs) or not test:
            notes.append(f"xnli: not run, none of {list(grid)} has both a dev and a test split in {folder}")
            return None
        files = data_files([xnli_file(folder, split) for split in SPLITS])
        return SentenceInputs(langs=langs, files=tuple(files.values()), corpus="xnli",
                              options=self._options_of(ctx, grid, sources, targets))

    def _dataset_inputs(self, ctx: TaskContext, notes: list[str]) -> SentenceInputs:
        """Each language's validation and test splits of an XNLI-layout dataset, resolved and read now."""
        d, source = ctx.data, ctx.options.dataset
        ds = Dataset(source, "xnli.dataset")
        notes.append(ds.describe())
        grid, sources, targets = ctx.grid(default=ds.configs)
        langs = tuple(dict.fromkeys([*grid, *sources, *targets]))
        parts = {lang: tuple(ds.split(ds.config_of(lang), split) for split in DATASET_SPLITS) for lang in langs}
        columns = {c: source.column(c) for c in COLUMNS}
        read_xnli_dataset(parts, columns, (d.max_train_sentences, d.max_test_sentences))  # pre-flight: read now
        return SentenceInputs(langs=langs, files=tuple(p for lang in langs for p in parts[lang]), corpus="xnli",
                              options=self._options_of(ctx, grid, sources, targets) + (("columns", columns),))

    @staticmethod
    def _options_of(ctx: TaskContext, grid, sources, targets) -> tuple:
        d = ctx.data
        return (("caps", (d.max_train_sentences, d.max_test_sentences)),
                ("grid", (tuple(grid), tuple(sources), tuple(targets))),
                ("probe", ctx.probe.model_dump(exclude={"mdl", *ProbeSpec.MLP_KEYS})),
                ("sentence_vectors", SENTENCE_VECTORS))

    def rows_per_unit(self, n_langs: int, n_layers: int, cross_lingual: bool) -> int:
        return n_layers * n_langs ** (2 if cross_lingual else 1)  # an upper bound: sources need a dev split

    def rows(self, unit, runtime: Runtime) -> list[dict]:
        """Probes on [u; v; |u - v|; u * v] sentence-pair vectors: fit on each source's dev pairs (all
        layers in one solve), scored on every target's test pairs."""
        from xlp.models.extract import FeatureExtractor
        from xlp.probing.linear import fit_probes, majority_accuracy

        (train_cap, test_cap), probe = unit.inputs.option("caps"), unit.inputs.option("probe")
        files = unit.inputs.files
        if isinstance(files[0], DatasetSplit):  # two splits a language
            parts = {lang: (files[2 * i], files[2 * i + 1]) for i, lang in enumerate(unit.langs)}
            splits = read_xnli_dataset(parts, unit.inputs.option("columns"), (train_cap, test_cap))
        else:
            paths = dict(zip(SPLITS, (Path(f.path) for f in files)))
            splits = {"dev": read_xnli_file(paths["dev"], list(unit.langs), train_cap),
                      "test": read_xnli_file(paths["test"], list(unit.langs), test_cap)}
        extractor = FeatureExtractor(unit.ckpt, list(unit.layers), **runtime.model_options())

        def features(premises, hypotheses) -> np.ndarray:  # (L, n, 4d)
            u, v = extractor.sentence_means(premises), extractor.sentence_means(hypotheses)
            return np.stack([pair_features(u[layer], v[layer]) for layer in unit.layers])

        data = {(split, lang): (features(p, h), y) for split, by_lang in splits.items()
                for lang, (p, h, y) in by_lang.items()}
        grid, sources, targets = unit.inputs.option("grid")
        rows = []
        for src in [lang for lang in unit.langs if ("dev", lang) in data and (lang in grid or lang in sources)]:
            X, y = data[("dev", src)]
            probes = fit_probes(X, y, probe["l2"], probe["max_iter"], probe["tol"])
            for tgt in [lang for lang in unit.langs if ("test", lang) in data and (
                    (lang == src and src in grid) or (src in sources and lang in targets and lang != src))]:
                Xt, yt = data[("test", tgt)]
                values, correct = probes.score(Xt, yt, self.metric)
                for li, layer in enumerate(unit.layers):  # the fit is deterministic: one probe for every seed
                    rows += seed_rows(unit, task=self.name, layer=layer, src=src, tgt=tgt, metric=self.metric,
                                      value=values[li], baseline=majority_accuracy(yt), n_train=len(y),
                                      n_test=len(yt), correct=correct[li], fit=(probes, li))
        return rows

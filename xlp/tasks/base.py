"""The task interface. Every task, built in or a researcher's own, is one class implementing it.

A `WordTask` is a probe on stored word features: the orchestrator extracts each language's words once
and the task turns a feature shard into examples (`examples`), optionally scoring its own way
(`evaluate`). A `SentenceTask` runs the model itself on whole texts (sentence vectors, LM scores):
at plan time it resolves the files it reads (`inputs`), and one unit per checkpoint makes its rows
(`rows`). Both name their metric, its direction and the definition the report states.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from xlp.config import DataSpec, ProbeSpec, TaskGridSpec
from xlp.config.spec import task_grid
from xlp.hashing import DataFile

if TYPE_CHECKING:  # for hints only
    import pandas as pd

    from xlp.models.checkpoints import Checkpoint


class TaskOptions(BaseModel):
    """A task's own options: the spec's section under the task's name (`bpc: {text: ...}`). A task with
    options subclasses this and names the subclass as its `Options`; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SplitFiles = DataFile | tuple[DataFile, ...]  # a split's file, or the parts of a split published in several


@dataclass(frozen=True)
class UdFiles:
    """A language's resolved treebank splits, read at plan time: (split name, file or parts), or None where the
    treebank has no such split or no unit of the run reads it (pre-flight neither hashes nor parses it then)."""
    treebank: str
    train: tuple[str, SplitFiles] | None
    test: tuple[str, SplitFiles] | None
    share: float | None = None  # data.split_test: train and test are two parts of one test split

    def part(self, side: str) -> tuple[str, float] | None:
        """("train" or "test", share) where the language's test split is cut in two, else None."""
        return None if self.share is None else (side, self.share)


@dataclass(frozen=True)
class RunData:
    """What pre-flight resolved for the spec's data: the UD root in use and each language's files."""
    ud_root: Path
    ud: dict[str, UdFiles] = field(default_factory=dict)

    def test_files(self, langs: list[str]) -> dict[str, SplitFiles]:
        return {lang: self.ud[lang].test[1] for lang in langs if lang in self.ud and self.ud[lang].test}


@dataclass(frozen=True)
class TaskContext:
    """What a task sees of a run: its own options, the spec's data section and probe settings, its grid of
    languages and, from pre-flight on, the data resolved for the run. Never the whole spec."""
    name: str
    options: TaskOptions
    data: DataSpec
    probe: ProbeSpec
    pooling: str
    cross_lingual: bool = True
    grid_entry: TaskGridSpec | None = None
    trust_remote_code: bool = False
    run_data: RunData | None = None

    def grid(self, default: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
        """(in-language languages, cross-lingual sources, targets): the task's `task_grid` entry, else
        `default`, else data.languages."""
        return task_grid(self.grid_entry, default or self.data.languages, self.cross_lingual)


class Task(ABC):
    name: ClassVar[str]
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    definition: ClassVar[str]  # what the report and README state: examples, metric, baseline
    pairwise_only: ClassVar[bool] = False  # in-language values are trivial: curves use the other languages
    reads_ud: ClassVar[bool] = True  # its languages' data are data.languages' UD treebanks (their test splits, for a
    # sentence task: `ctx.run_data.test_files`; pre-flight reads no split a unit does not)
    Options: ClassVar[type[TaskOptions]] = TaskOptions  # its section of the spec, under its name
    data_command: ClassVar[str | None] = None  # `xlp data NAME` fetches the dataset its options' `dataset` names
    # where older specs wrote its options: a dotted key -> the key in its section it is now (None: the section)
    legacy_keys: ClassVar[dict[str, str | None]] = {}

    _options: TaskOptions | None = None

    @property
    def options(self) -> TaskOptions:
        """The run's options for this task (its Options' defaults until `configured`)."""
        return self._options if self._options is not None else self.Options()

    def configured(self, options: TaskOptions) -> Task:
        """This task with a run's options (a copy: the registry's instance stays as it is)."""
        task = copy.copy(self)
        task._options = options
        return task

    def extra_tables(self, probes: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame]]:
        """Tables derived from the run's rows: {file name: (report title, table)}; none by default."""
        return {}

    def reads_ud_with(self, options: TaskOptions) -> bool:
        """Whether, with these options, the task's languages' data are data.languages' UD treebanks."""
        return self.reads_ud

    @staticmethod
    def value_from_sums(sums: np.ndarray, count: int) -> np.ndarray:
        """The metric from per-item scores summed over a set of test items: `sums` (k, ...) holds the sums of
        the k per-item columns a row carries (`correct`: one 0/1 column; `item_sums`: the task's own), `count`
        how many items were summed. By default the mean of one column (accuracy: the share correct). The
        reducer's bootstrap recomputes the metric this way on every resample of the test items."""
        return sums[0] / count

    def describe_grid(self, ctx: TaskContext, langs: list[str] | None) -> str:
        """The grid `xlp validate` prints for this task, given the languages its units read."""
        own, sources, targets = ctx.grid(default=langs)
        across = f"cross-lingual {len(sources)} x {len(targets)}" if sources else "no cross-lingual pairs"
        if self.pairwise_only:
            return f"{across} (in-language values are trivial)"
        return f"in-language {len(own)} ({', '.join(own)}); {across}"


class FeatureTask(Task):
    """A task on stored word features: the orchestrator extracts each language's words once and a probe unit reads
    the shards. `needs` names the shard's label columns it reads; `seeded` says whether its examples depend on the
    seed; a task that scores with another's probe names it in `fit_with` (the probe is fit once when both run).
    Its options reach the worker in the probe unit (and count in its hash). It is one of two kinds: a `WordTask`
    turns a shard into classification examples for the run's probe (`probe.kind`); an `OwnProbeTask` fits a probe
    of its own (the structural probes)."""

    needs: ClassVar[tuple[str, ...]]
    seeded: ClassVar[bool] = False
    fit_with: ClassVar[str | None] = None

    def trained_on(self, train: pa.Table) -> FeatureTask:
        """The task as its probe is fit and scored when `train` (the source's training shard) is the training
        data: a control task draws its labels from train's distribution. By default the task itself."""
        return self

    def item_sentences(self, table: pa.Table) -> np.ndarray:
        """The sentence (`sent_idx`) of each test item the task scores on this shard, in the order of its
        per-item scores: the unit the reducer resamples. By default one item per word."""
        return table.column("sent_idx").to_numpy()


class WordTask(FeatureTask):
    """A probe on word features (linear or MLP, `probe.kind`) fit on the task's `examples`; `examples` reads
    `self.options`. A task that scores its own way with that probe (`arc_uas`: head selection) implements
    `evaluate(probe, table, layer_columns)` and `test_baseline(table)` as an `OwnProbeTask` does."""

    @abstractmethod
    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Features (L, n, d) of the given layer columns and labels (n,)."""


class OwnProbeTask(FeatureTask):
    """A task on word features that fits a probe of its own (the structural probes: not a classifier, so it has
    no examples and no `probe.kind`)."""

    @abstractmethod
    def fit(self, table: pa.Table, layer_columns: list[str], probe: ProbeSpec, device=None) -> tuple[Any, int]:
        """(the fitted probes of every layer column, training items), from a fixed start: every seed gives the
        same probe on the same table."""

    @abstractmethod
    def evaluate(self, probe, table: pa.Table, layer_columns: list[str]) -> tuple:
        """(L,) values, per-item scores ((L, n) 0/1, or (L, k, n) columns whose sums give the value) and,
        optionally, a dict of extra columns per layer."""

    @abstractmethod
    def test_baseline(self, table: pa.Table) -> float:
        """The baseline value on this test shard."""


@dataclass(frozen=True)
class SentenceInputs:
    """What a sentence task's units read, resolved at plan time; every field is part of the unit's hash."""
    langs: tuple[str, ...]
    files: tuple[SplitFiles, ...]  # a split in parts: the tuple of its parts
    corpus: str  # names the unit (its key)
    options: tuple[tuple[str, Any], ...] = ()  # caps and settings that change the rows

    def option(self, name: str) -> Any:
        return dict(self.options)[name]


@dataclass(frozen=True)
class Runtime:
    """How a unit runs, never what it computes (so none of it is hashed)."""
    device: str | None = None
    batch_tokens: int | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    precision: str = "auto"  # the forward pass's arithmetic (xlp.models.loading.resolve_precision), like the device

    def model_options(self) -> dict[str, Any]:
        """The keywords a model runner takes for these (FeatureExtractor, MlmScorer, CausalLmScorer)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class SentenceTask(Task):
    """A task that runs the model on whole texts: one unit per checkpoint, all languages inside."""

    @abstractmethod
    def inputs(self, ctx: TaskContext, notes: list[str]) -> SentenceInputs | None:
        """Read and check the task's data now (pre-flight; `ctx.run_data` is set). None: the task does not
        run; a note in `notes` says why (as for anything left out)."""

    def skip(self, ckpt: Checkpoint, ctx: TaskContext) -> str | None:
        """A note when this checkpoint cannot run the task (it is left out, not an error)."""
        return None

    def unit_layers(self, layers: list[int], depth: int) -> tuple[int, ...]:
        """The layers a checkpoint's unit reports, given the run's layers and the checkpoint's depth."""
        return tuple(layers)

    def rows_per_unit(self, n_langs: int, n_layers: int, cross_lingual: bool) -> int:
        """Rows one unit writes per seed (an upper bound where data decides), for `xlp validate`."""
        return n_layers * n_langs

    @abstractmethod
    def rows(self, unit, runtime: Runtime) -> list[dict]:
        """The unit's rows of probes.parquet (see `result_row`)."""


PER_ITEM_COLUMNS = ("correct", "item_sums", "item_groups")  # bytes for the reducer: Parquet only, never the CSV


def result_row(unit, *, task: str, layer: int, src: str, tgt: str, seed: int, metric: str, value: float,
               baseline: float, n_train: int, n_test: int, invariant: bool, correct: np.ndarray | None,
               pooling: str | None = None, fit: tuple | None = None, item_sums: np.ndarray | None = None,
               item_groups: np.ndarray | None = None) -> dict:
    """One row of probes.parquet; `correct` (per test item) is bit-packed for the reducer's paired bootstrap;
    a metric that is not a share of items correct gives instead `item_sums`, (k, n_test) per-item columns
    whose sums give the value through the task's `value_from_sums` (float32 bytes, for the same bootstrap);
    `tokens` is the tokens seen at the checkpoint where its name or metadata says; `pooling` the subword
    pooling of word vectors (None where the task pools otherwise); `fit` (a LinearProbes, MlpProbes or OnlineCode
    and this row's index among them) gives the probe's kind, L-BFGS iterations and final gradient max-norm (null
    without one);
    `item_groups` (n_test,) the sentence of each test item (int32 bytes), where items share sentences (words,
    arcs): the reducer resamples, halves and sign-tests whole sentences."""
    return {"checkpoint": unit.ckpt.name, "step": unit.ckpt.step, "tokens": unit.ckpt.tokens, "task": task,
            "layer": layer, "src_lang": src, "tgt_lang": tgt, "seed": seed, "metric": metric, "value": float(value),
            "baseline": baseline, "n_train": n_train, "n_test": n_test, "seed_invariant": invariant,
            "pooling": pooling, "correct": None if correct is None else np.packbits(correct).tobytes(),
            "item_sums": None if item_sums is None else np.asarray(item_sums, dtype=np.float32).tobytes(),
            "item_groups": None if item_groups is None else np.asarray(item_groups, dtype=np.int32).tobytes(),
            "probe_kind": None if fit is None else fit[0].kind,
            "probe_iters": None if fit is None else int(fit[0].iterations[fit[1]]),
            "probe_grad_norm": None if fit is None else float(fit[0].grad_norm[fit[1]])}


def seed_rows(unit, extra: dict | None = None, **fields) -> list[dict]:
    """A value no seed changes (no probe, or a fit that is deterministic) as one row per seed of the unit, so
    that every task has the same rows; `extra` adds a task's own columns."""
    row = {**result_row(unit, seed=unit.seeds[0], invariant=True, **fields), **(extra or {})}
    return [{**row, "seed": seed} for seed in unit.seeds]

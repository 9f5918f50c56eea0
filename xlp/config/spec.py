"""The core spec's typed models. Task options are not here: each task owns its options model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from xlp.config.source import SpecSource
from xlp.paths import is_safe_name

Precision = Literal["auto", "float32", "bfloat16"]  # a model's arithmetic (xlp.models.loading.resolve_precision)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterSpec(_Strict):
    address: str | None = None
    extractors: int = Field(1, ge=1)
    gpus_per_extractor: float = Field(0, ge=0)
    cpus_per_extractor: float | None = Field(None, gt=0, description="CPUs Ray reserves per extraction actor, "
                                             "its torch threads; null: 1, plus its node's idle CPUs on a CPU node")
    cpus_per_probe: float = Field(1, gt=0)
    gpus_per_probe: float = Field(0, ge=0, description="GPUs a probe unit asks Ray for (fractions share one); "
                                  "probes then fit on the GPU Ray gives them (the CPU where it has none)")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray node; null: all")


class CheckpointSpec(_Strict):
    path: str | None = None
    step: int | None = Field(None, ge=0)
    repo: str | None = None
    revisions: list[str] | str | None = Field(None, description="list, 'all' or a pattern such as 'step*'")
    steps: list[str] | None = Field(None, description="with a `repo` holding {step}: one repository per checkpoint")

    @model_validator(mode="after")
    def _one_source(self) -> "CheckpointSpec":
        if (self.path is None) == (self.repo is None):
            raise ValueError("give exactly one of `path` (local directory or glob) or `repo` (hub repo)")
        if self.repo is not None and "{step}" in self.repo:
            if not self.steps or self.revisions:
                raise ValueError("a `repo` pattern with {step} (one repository per checkpoint) needs `steps`, "
                                 "e.g. [0k, 20k, 2000k], and no `revisions`")
            return self
        if self.steps:
            raise ValueError("`steps` goes with a `repo` pattern holding {step}")
        if self.repo is not None and not self.revisions:
            raise ValueError("a hub `repo` needs `revisions`, e.g. [step1000, step2000]")
        if self.path is not None and self.revisions:
            raise ValueError("`revisions` goes with `repo`, not `path`")
        return self


class DataSpec(_Strict):
    ud_root: str | list[str] = Field(
        description="folder, ud://VERSION (fetched into the cache), or a list: first usable")
    languages: list[str] = Field(min_length=1)
    treebanks: dict[str, str] = {}
    train_split: str = "train"
    test_split: str = "test"
    max_train_sentences: int | None = Field(2000, ge=1)
    max_test_sentences: int | None = Field(1000, ge=1)
    conllu: Literal["strict", "lenient"] = "strict"  # lenient: skip malformed sentences, report how many
    split_test: dict[str, float] = Field({}, description="language -> share: a treebank with only a test split "
                                         "is cut in two by a hash of each sentence id; probes train on about that "
                                         "share and every probe is scored on the rest, so it is a source too")

    @field_validator("languages")
    @classmethod
    def _codes(cls, langs: list[str]) -> list[str]:
        for lang in langs:
            if not re.fullmatch(r"[a-z]{2,3}", lang):
                raise ValueError(f"{lang!r} is not an ISO 639 language code (two or three lowercase letters)")
        if len(set(langs)) != len(langs):
            raise ValueError("a language is listed twice")
        return langs

    @model_validator(mode="after")
    def _split_test(self) -> "DataSpec":
        for lang, share in self.split_test.items():
            if lang not in self.languages:
                raise ValueError(f"split_test: {lang!r} is not in data.languages")
            if not 0 < share < 1:
                raise ValueError(f"split_test.{lang}: {share} is not a share between 0 and 1")
        return self


class ProbeSpec(_Strict):
    seeds: list[int] = Field([0], min_length=1)
    l2: float = Field(1e-3, ge=0)
    max_iter: int = Field(1000, ge=1, description="L-BFGS iterations at most per probe (a safety cap; a probe "
                          "stops at `tol`)")
    tol: float = Field(5e-5, gt=0, description="a probe has converged when no entry of its gradient exceeds this "
                       "(scikit-learn's lbfgs tol, same objective)")
    max_train_words: int | None = Field(None, ge=1, description="subsample the source's train words (per seed; "
                                           "distance and depth: whole sentences up to the cap)")
    layers_per_unit: int | None = Field(None, ge=1, description="layers fit together in one probe unit; null: all")
    resample: Literal["none", "bootstrap"] = Field(
        "none", description="bootstrap: each seed fits on a resample of the training sentences (with replacement), "
                            "so the spread over seeds is probe-training variance; none: one fit on all of them")
    kind: Literal["linear", "mlp"] = Field("linear", description="linear: multinomial logistic regression; mlp: one "
                                           "hidden ReLU layer of `hidden` units before it")
    hidden: int = Field(256, ge=1, description="hidden units of an MLP probe")
    dropout: float = Field(0.0, ge=0, lt=1, description="an MLP probe's dropout on its hidden units (a mask drawn "
                           "once per fit from the seed)")
    mdl: bool = Field(False, description="also the online code (Voita & Titov 2020) of each word task's training "
                      "labels: codelength, uniform codelength and compression, a curve of its own (<task>_mdl)")
    # keys added after runs were made: a unit's hash counts them only away from their default (older runs keep theirs)
    HASHED_WHEN_SET: ClassVar[tuple[str, ...]] = ("mdl", "kind", "hidden", "dropout")
    MLP_KEYS: ClassVar[tuple[str, ...]] = ("kind", "hidden", "dropout")

    def read_by(self, mlp: bool) -> ProbeSpec:
        """These settings as a probe unit carries them: where no MLP is fit (a linear probe, a task that fits its
        own), the MLP's keys at their defaults, so that they do not count in its hash."""
        return self if mlp else self.model_copy(update={k: type(self).model_fields[k].default for k in self.MLP_KEYS})


class TaskGridSpec(_Strict):
    """One task's own languages: in-language ones, and the cross-lingual sources and targets (the paper's
    grid: POS in 44 languages in-language, 18 x 18 across languages). Unset: the task's default."""

    languages: list[str] | None = None
    sources: list[str] | None = None
    targets: list[str] | None = None


def task_grid(entry: TaskGridSpec | None, default: list[str],
              cross_lingual: bool) -> tuple[list[str], list[str], list[str]]:
    """(in-language languages, cross-lingual sources, targets) from a task's `task_grid` entry and the
    languages it has by default; sources and targets default to its languages, none without cross_lingual."""
    g = entry or TaskGridSpec()
    langs = g.languages or default
    if not cross_lingual:
        return langs, [], []
    return langs, g.sources or langs, g.targets or langs


class AnalysisSpec(_Strict):
    emergence_threshold: float = Field(0.95, gt=0, le=1)
    emergence_reference: Literal["best", "final"] = Field(
        "best", description="the value the emergence step is a fraction of: the curve's best or its final checkpoint's")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="level of every test; intervals are (1 - alpha) percentile")
    bootstrap: int = Field(1000, ge=100, description="bootstrap resamples of the test items (and of seeds that differ)")
    seed: int = Field(0, description="seed of the bootstrap and of the split of test items into halves")
    min_effect: float | dict[str, float] = Field(
        0.03, description="the smallest rise (reference - first checkpoint) that counts as learning, in the metric's "
        "own units (accuracy: 0.03 = 3 points; bpc: bits per character); a number, or one per task by name "
        "(tasks not named: 0.03)")

    def effect(self, task: str) -> float:
        """The minimum rise that counts as learning for a task."""
        m = self.min_effect
        return float(m.get(task, 0.03) if isinstance(m, dict) else m)


class PretrainSpec(_Strict):
    """Build the checkpoint series with `xlp pretrain` before probing, if it is not there yet."""

    out: str
    languages: list[str] | None = None
    ud_root: str | list[str] | None = None
    udhr: str | None = None
    seed: int = 0
    steps: int = Field(3200, ge=1)
    save_steps: list[int] | None = None
    layers: int = Field(4, ge=1)
    hidden: int = Field(32, ge=8)
    heads: int = Field(2, ge=1)
    ffn: int = Field(128, ge=8)
    vocab_size: int = Field(4000, ge=100)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(64, ge=8)
    lr: float = Field(2e-3, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    warmup: int = Field(50, ge=0)
    alpha: float = Field(0.3, gt=0, le=1, description="languages sampled (and the tokenizer trained) with "
                         "probabilities q_i ∝ p_i^alpha, p_i a language's share of the text (XLM-R: 0.3)")
    char_coverage: float = Field(0.995, gt=0, le=1, description="share of the sampled text's characters that get "
                                 "pieces; rarer characters are spelled in bytes")
    split_test: dict[str, float] = Field({}, description="language -> share: also pretrain on the train part of a "
                                         "test-only treebank, cut as data.split_test cuts it (never its test part)")
    mask_prob: float = Field(0.4, gt=0, lt=1, description="share of tokens masked (80/10/10 rule)")
    whole_word: bool = Field(False, description="mask whole words (a '▁' piece and those up to the next)")
    threads: int | None = Field(1, ge=1, description="torch CPU threads while training; null: torch's default")


def pretrain_with(base: PretrainSpec | None, **given) -> PretrainSpec:
    """A pretraining recipe: `base` (a spec's section) with the values given (None: keep), validated."""
    from pydantic import ValidationError

    from xlp.errors import XlpError

    fields = base.model_dump() if base else {}
    fields.update({k: v for k, v in given.items() if v is not None})
    try:
        return PretrainSpec.model_validate(fields)
    except ValidationError as e:
        raise XlpError(f"pretrain options: {e}") from None


class Spec(BaseModel):
    """The core spec. A task's options are a section under the task's name (`bpc:`, `retrieval:`, ...), kept
    here as written and validated by the task's own options model when the run's tasks are resolved."""

    model_config = ConfigDict(extra="allow")
    _source: SpecSource | None = PrivateAttr(None)
    name: str
    output: str
    cluster: ClusterSpec = ClusterSpec()
    checkpoints: list[CheckpointSpec] = Field(min_length=1)
    data: DataSpec
    tasks: list[str] | None = Field(None, min_length=1, description="task names; null: the registry's default")
    layers: Literal["all"] | list[int] = "all"
    pooling: Literal["auto", "first", "mean", "last"] = "auto"  # auto: last in a causal LM, first otherwise
    probe: ProbeSpec = ProbeSpec()
    cross_lingual: bool = True
    task_grid: dict[str, TaskGridSpec] = Field({}, description="per task name: its own languages, sources, targets")
    analysis: AnalysisSpec = AnalysisSpec()
    trust_remote_code: bool = False
    allow_pickle: bool = False
    allow_tokenizer_mismatch: bool = False
    feature_dtype: Literal["float16", "float32"] = "float16"
    features: Literal["keep", "drop"] = Field(
        "keep", description="drop: delete a checkpoint's feature shards once every probe that reads them is done")
    batch_tokens: int | None = Field(None, ge=16, description="subword tokens per extraction batch; null: "
                                     "16384 on a GPU, 1024 on a CPU (where small batches measured faster)")
    precision: Precision = Field(
        "auto", description="the model's arithmetic: auto = bfloat16 on a GPU and on a CPU that computes it natively "
        "(AVX512-BF16, AMX), float32 elsewhere; like the device, it is recorded per unit and does not redo finished "
        "ones")
    pretrain: PretrainSpec | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not is_safe_name(name):
            raise ValueError(f"{name!r} must be letters, digits, '.', '_' or '-' (it names folders)")
        return name

    @property
    def source(self) -> SpecSource:
        """Where the spec was read from (a spec built in code names itself as `<spec>`)."""
        return self._source or SpecSource(Path("<spec>"))

    def section(self, key: str) -> dict:
        """A task option section as written (empty when absent)."""
        return (self.model_extra or {}).get(key) or {}

    def grid(self, task: str, default: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
        """A task's (in-language languages, cross-lingual sources, cross-lingual targets): its `task_grid`
        entry, else `default` (else data.languages); sources and targets default to its languages, and
        with `cross_lingual: false` there are none."""
        return task_grid(self.task_grid.get(task), default or self.data.languages, self.cross_lingual)

    @model_validator(mode="after")
    def _pretrain_defaults(self) -> "Spec":
        """The series is pretrained on the text of the run's own data (its UD root, languages, and the train part
        of a test split it cuts) unless the section says otherwise, whichever command (`xlp pretrain SPEC` or
        `xlp launch SPEC`) builds it."""
        if self.pretrain is not None:
            for lang, share in self.pretrain.split_test.items():
                if self.data.split_test.get(lang, share) != share:
                    raise ValueError(f"pretrain.split_test.{lang}: {share} is not data.split_test.{lang} "
                                     f"({self.data.split_test[lang]}): the series would be pretrained on sentences "
                                     "the probes are scored on")
            self.pretrain = self.pretrain.model_copy(update={
                "ud_root": self.pretrain.ud_root or self.data.ud_root,
                "languages": self.pretrain.languages or sorted(self.data.languages),
                "split_test": self.pretrain.split_test or self.data.split_test})
        return self

    @field_validator("layers")
    @classmethod
    def _layer_ints(cls, layers: Any) -> Any:
        if isinstance(layers, list):
            if not layers or any(layer < 0 for layer in layers):
                raise ValueError("layers are non-negative ints (0 = embeddings), or 'all'")
            return sorted(set(layers))
        return layers

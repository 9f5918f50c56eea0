"""The experiment spec: YAML validated into typed models; errors name the file, line and key."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xlp.errors import XlpError
from xlp.paths import is_safe_name, shared_dir

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterSpec(_Strict):
    address: str | None = None
    extractors: int = Field(1, ge=1)
    gpus_per_extractor: float = Field(0, ge=0)
    cpus_per_extractor: float = Field(1, gt=0)
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
    xnli: str | None = Field(None, description="the XNLI-1.0 folder (xnli.dev.tsv, xnli.test.tsv), for task xnli")

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
    max_train_words: int | None = Field(None, ge=1, description="subsample the source's train words (per seed)")
    layers_per_unit: int | None = Field(None, ge=1, description="layers fit together in one probe unit; null: all")
    resample: Literal["none", "bootstrap"] = Field(
        "none", description="bootstrap: each seed fits on a resample of the training sentences (with replacement), "
                            "so the spread over seeds is probe-training variance; none: one fit on all of them")


class TaskGridSpec(_Strict):
    """One task's own languages: in-language ones, and the cross-lingual sources and targets (the paper's
    grid: POS in 44 languages in-language, 18 x 18 across languages). Unset: the task's default."""

    languages: list[str] | None = None
    sources: list[str] | None = None
    targets: list[str] | None = None


class RetrievalSpec(_Strict):
    corpus: Literal["udhr", "pud"] = "udhr"
    udhr: str | None = Field(None, description="the UDHR TSV (lang, article, paragraph, text); default: XLP_SHARED's")
    max_sentences: int | None = Field(500, ge=2)


class BpcSpec(_Strict):
    """Where the `bpc` task's text comes from: each language's UD test split (default), or plain text, a
    folder of `<lang>.txt` files, one text a line (held-out pretraining text, as the paper's 94 languages);
    its languages are then `task_grid.bpc.languages` and need no treebank."""

    text: str | None = None


class AlignmentSpec(_Strict):
    """The `align` task's gold data: a folder of `<pair>.src-tgt` / `<pair>.gold` files (the layout of
    ${XLP_SHARED}/alignment), or explicit [sentences, gold] file pairs per pair name."""

    gold: str = Field(default_factory=lambda: str(shared_dir() / "alignment"))
    pairs: list[str] = Field(["enfr", "zhen"], min_length=1, description="XXYY or xx-yy: source then target")
    files: dict[str, tuple[str, str]] = Field({}, description="pair -> [sentence file, gold file]")
    one_indexed: bool = True
    method: Literal["argmax", "itermax"] = "argmax"
    max_sentences: int | None = Field(None, ge=1)


class AnalysisSpec(_Strict):
    emergence_threshold: float = Field(0.95, gt=0, le=1)
    emergence_reference: Literal["best", "final"] = Field(
        "best", description="the value the emergence step is a fraction of: the curve's best or its final checkpoint's")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="level of every test; intervals are (1 - alpha) percentile")
    bootstrap: int = Field(1000, ge=100, description="bootstrap resamples of the test items (and of seeds that differ)")
    seed: int = Field(0, description="seed of the bootstrap and of the split of test items into halves")


class PretrainSpec(_Strict):
    """Build the checkpoint series with `xlp pretrain` before probing, if it is not there yet."""

    out: str
    languages: list[str] | None = None
    ud_root: str | list[str] | None = None
    udhr: str | None = None
    seed: int = 0
    steps: int = Field(1600, ge=1)
    save_steps: list[int] | None = None
    layers: int = Field(4, ge=1)
    hidden: int = Field(64, ge=8)
    heads: int = Field(2, ge=1)
    ffn: int = Field(256, ge=8)
    vocab_size: int = Field(4000, ge=100)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(64, ge=8)
    lr: float = Field(2e-3, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    warmup: int = Field(50, ge=0)
    alpha: float = Field(0.3, gt=0, le=1)
    mask_prob: float = Field(0.4, gt=0, lt=1, description="share of tokens masked (80/10/10 rule)")
    whole_word: bool = Field(False, description="mask whole words (a '▁' piece and those up to the next)")
    threads: int | None = Field(1, ge=1, description="torch CPU threads while training; null: torch's default")


class Spec(_Strict):
    name: str
    output: str
    cluster: ClusterSpec = ClusterSpec()
    checkpoints: list[CheckpointSpec] = Field(min_length=1)
    data: DataSpec
    tasks: list[str] = Field(default_factory=lambda: [_default_task()], min_length=1)
    layers: Literal["all"] | list[int] = "all"
    pooling: Literal["auto", "first", "mean", "last"] = "auto"  # auto: last in a causal LM, first otherwise
    probe: ProbeSpec = ProbeSpec()
    cross_lingual: bool = True
    task_grid: dict[str, TaskGridSpec] = Field({}, description="per task name: its own languages, sources, targets")
    retrieval: RetrievalSpec = RetrievalSpec()
    bpc: BpcSpec = BpcSpec()
    alignment: AlignmentSpec = AlignmentSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    trust_remote_code: bool = False
    allow_pickle: bool = False
    allow_tokenizer_mismatch: bool = False
    feature_dtype: Literal["float16", "float32"] = "float16"
    features: Literal["keep", "drop"] = Field(
        "keep", description="drop: delete a checkpoint's feature shards once every probe that reads them is done")
    batch_tokens: int | None = Field(None, ge=16, description="subword tokens per extraction batch; null: "
                                     "16384 on a GPU, 1024 on a CPU (where small batches measured faster)")
    pretrain: PretrainSpec | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not is_safe_name(name):
            raise ValueError(f"{name!r} must be letters, digits, '.', '_' or '-' (it names folders)")
        return name

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        from xlp.tasks import get_task

        for task in tasks:
            try:
                get_task(task)
            except XlpError as e:
                raise ValueError(str(e)) from None
        return tasks

    def grid(self, task: str, default: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
        """A task's (in-language languages, cross-lingual sources, cross-lingual targets): its `task_grid`
        entry, else `default` (else data.languages); sources and targets default to its languages, and
        with `cross_lingual: false` there are none."""
        g = self.task_grid.get(task) or TaskGridSpec()
        langs = g.languages or default or self.data.languages
        if not self.cross_lingual:
            return langs, [], []
        return langs, g.sources or langs, g.targets or langs

    @model_validator(mode="after")
    def _task_grid_languages(self) -> "Spec":
        """A task that reads UD treebanks takes its languages from data.languages."""
        from xlp.tasks import get_task

        for name, g in self.task_grid.items():
            try:
                reads_ud = get_task(name).reads_ud_in(self)
            except XlpError as e:
                raise ValueError(f"task_grid.{name}: {e}") from None
            for key in ("languages", "sources", "targets"):
                langs = getattr(g, key) or []
                if not reads_ud:
                    continue
                missing = [lang for lang in langs if lang not in self.data.languages]
                if missing:
                    raise ValueError(f"task_grid.{name}.{key}: {missing} not in data.languages")
        return self

    @model_validator(mode="after")
    def _pretrain_defaults(self) -> "Spec":
        """The series is pretrained on the text of the run's own data unless the section says otherwise,
        whichever command (`xlp pretrain SPEC` or `xlp launch SPEC`) builds it."""
        if self.pretrain is not None:
            self.pretrain = self.pretrain.model_copy(update={
                "ud_root": self.pretrain.ud_root or self.data.ud_root,
                "languages": self.pretrain.languages or sorted(self.data.languages)})
        return self

    @field_validator("layers")
    @classmethod
    def _layer_ints(cls, layers: Any) -> Any:
        if isinstance(layers, list):
            if not layers or any(layer < 0 for layer in layers):
                raise ValueError("layers are non-negative ints (0 = embeddings), or 'all'")
            return sorted(set(layers))
        return layers


def _default_task() -> str:
    from xlp.tasks.pos import PosTask

    return PosTask.name


def _expand(value: Any, where: str, path: Path) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            var = m.group(1)
            if var in os.environ:
                return os.environ[var]
            if var == "XLP_SHARED":
                return str(shared_dir())
            raise XlpError(f"{path}: key `{where}`: environment variable ${{{var}}} is not set")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}" if where else str(k), path) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", path) for i, v in enumerate(value)]
    return value


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line in the YAML source of the value at `loc` (as deep as it exists)."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, val in node.value:
                if key.value == str(part):
                    line, nxt = key.start_mark.line + 1, val
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            node = None
    return line


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file; raise XlpError naming file, line and key on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise XlpError(f"spec file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise XlpError(f"cannot read spec {path}: {e}") from None
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise XlpError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise XlpError(f"{path}: a spec is a YAML mapping of keys (name, output, checkpoints, data, ...)")
    raw = _expand(raw, "", path)
    try:
        return Spec.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(root, loc)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check its spelling against the spec reference in the README)"
            lines.append(f"{path}{f':{line}' if line else ''}: key `{key}`: {msg}")
        raise XlpError("invalid spec\n" + "\n".join(lines)) from None

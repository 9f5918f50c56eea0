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
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray node; null: all")


class CheckpointSpec(_Strict):
    path: str | None = None
    step: int | None = Field(None, ge=0)
    repo: str | None = None
    revisions: list[str] | str | None = Field(None, description="list, 'all' or a pattern such as 'step*'")

    @model_validator(mode="after")
    def _one_source(self) -> "CheckpointSpec":
        if (self.path is None) == (self.repo is None):
            raise ValueError("give exactly one of `path` (local directory or glob) or `repo` (hub repo)")
        if self.repo is not None and not self.revisions:
            raise ValueError("a hub `repo` needs `revisions`, e.g. [step1000, step2000]")
        if self.path is not None and self.revisions:
            raise ValueError("`revisions` goes with `repo`, not `path`")
        return self


class DataSpec(_Strict):
    ud_root: str | list[str] = Field(description="folder, ud://VERSION (fetched into the cache), or a list: first usable")
    languages: list[str] = Field(min_length=1)
    treebanks: dict[str, str] = {}
    train_split: str = "train"
    test_split: str = "test"
    max_train_sentences: int | None = Field(2000, ge=1)
    max_test_sentences: int | None = Field(1000, ge=1)
    conllu: Literal["strict", "lenient"] = "strict"  # lenient: skip malformed sentences, report how many
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


class ProbeSpec(_Strict):
    seeds: list[int] = Field([0], min_length=1)
    l2: float = Field(1e-3, ge=0)
    max_iter: int = Field(1000, ge=1, description="L-BFGS iterations at most per probe (a safety cap; a probe "
                          "stops at `tol`)")
    tol: float = Field(5e-5, gt=0, description="a probe has converged when no entry of its gradient exceeds this "
                       "(scikit-learn's lbfgs tol, same objective)")
    max_train_words: int | None = Field(None, ge=1, description="subsample the source's train words (per seed)")
    layers_per_unit: int | None = Field(None, ge=1, description="layers fit together in one probe unit; null: all")


class RetrievalSpec(_Strict):
    corpus: Literal["udhr", "pud"] = "udhr"
    udhr: str | None = Field(None, description="the UDHR TSV (lang, article, paragraph, text); default: XLP_SHARED's")
    max_sentences: int | None = Field(500, ge=2)


class AnalysisSpec(_Strict):
    emergence_threshold: float = Field(0.95, gt=0, le=1)


class PretrainSpec(_Strict):
    """Build the checkpoint series with `xlp pretrain` before probing, if it is not there yet."""

    out: str
    languages: list[str] | None = None
    ud_root: str | list[str] | None = None
    udhr: str | None = None
    seed: int = 0
    steps: int = Field(800, ge=1)
    save_steps: list[int] | None = None
    layers: int = Field(4, ge=1)
    hidden: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    ffn: int = Field(512, ge=8)
    vocab_size: int = Field(4000, ge=100)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(64, ge=8)
    lr: float = Field(1e-3, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    warmup: int = Field(100, ge=0)
    alpha: float = Field(0.3, gt=0, le=1)


class Spec(_Strict):
    name: str
    output: str
    cluster: ClusterSpec = ClusterSpec()
    checkpoints: list[CheckpointSpec] = Field(min_length=1)
    data: DataSpec
    tasks: list[str] = Field(["pos"], min_length=1)
    layers: Literal["all"] | list[int] = "all"
    pooling: Literal["first", "mean", "last"] = "first"
    probe: ProbeSpec = ProbeSpec()
    cross_lingual: bool = True
    retrieval: RetrievalSpec = RetrievalSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    trust_remote_code: bool = False
    allow_pickle: bool = False
    allow_tokenizer_mismatch: bool = False
    feature_dtype: Literal["float16", "float32"] = "float16"
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
        from xlp.tasks import SENTENCE_TASKS, TASKS

        for task in tasks:
            if task not in TASKS and task not in SENTENCE_TASKS:
                raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted([*TASKS, *SENTENCE_TASKS]))}")
        return tasks

    @field_validator("layers")
    @classmethod
    def _layer_ints(cls, layers: Any) -> Any:
        if isinstance(layers, list):
            if not layers or any(layer < 0 for layer in layers):
                raise ValueError("layers are non-negative ints (0 = embeddings), or 'all'")
            return sorted(set(layers))
        return layers


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

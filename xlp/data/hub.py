"""Datasets a spec names on the Hugging Face hub (a repository and a revision) or as a local folder, read
through `datasets`.

A local folder is a copy of a dataset repository (`huggingface-cli download ORG/NAME --repo-type dataset
--local-dir DIR`): its README's `configs` say which files each config's splits are, as on the hub; a folder
without them holds one subfolder a config, its files named by split (`en/test-00000-of-00001.parquet`).
Pre-flight resolves a source once: the hub's README (the configs), then each config's files, downloaded
into the hub's cache (`HF_HUB_CACHE`) where the hub is reachable, read from that cache when it is not
(`HF_HUB_OFFLINE=1`), and the commit the revision named. A unit carries the files (path and SHA-256) and the
commit, so both count in its hash; its worker reads them with `datasets.load_dataset(<format>,
data_files=...)` and resolves or downloads nothing. `datasets` is imported only where a dataset is read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from xlp.errors import XlpError
from xlp.hashing import DataFile, data_files

IGNORED_CONFIGS = ("default", "all_languages")  # a config of every language, not one


class DatasetSource(BaseModel):
    """A dataset a task reads: `hub` (with `revision`) or `folder`; `configs` maps a language to its config
    where the task's own naming does not find it; `columns` renames the columns the task reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hub: str | None = Field(None, description="a dataset repository on the hub, org/name")
    revision: str | None = Field(None, description="a branch, tag or commit of `hub` (default main)")
    folder: str | None = Field(None, description="a local copy of a dataset repository")
    split: str | None = Field(None, description="the split the task reads (its default otherwise)")
    configs: dict[str, str] = Field(default_factory=dict, description="language -> the dataset's config")
    columns: dict[str, str] = Field(default_factory=dict, description="the task's column -> the dataset's")

    @model_validator(mode="after")
    def _one_place(self) -> DatasetSource:
        if (self.hub is None) == (self.folder is None):
            raise ValueError("give one of `hub` (org/name) or `folder`")
        if self.revision is not None and self.hub is None:
            raise ValueError("`revision` is for a hub dataset")
        return self

    @property
    def name(self) -> str:
        return f"{self.hub}@{self.revision or 'main'}" if self.hub else str(self.folder)

    def column(self, role: str) -> str:
        return self.columns.get(role, role)


@dataclass(frozen=True)
class DatasetSplit:
    """One config's split as pre-flight resolved it: what a unit reads and hashes (the commit and the files'
    digests; not where the files are, so a cache or folder that moved is not redone)."""
    repo: str | None  # the hub repository; None for a local folder
    revision: str | None  # the commit the hub resolved
    config: str
    split: str
    format: str  # the `datasets` builder that reads the files: parquet, json, csv, ...
    files: tuple[DataFile, ...]

    @property
    def where(self) -> str:
        place = f"{self.repo}@{self.revision[:12]}" if self.repo else str(Path(self.files[0].path).parent)
        return f"{place} (config {self.config}, split {self.split})"


def _card_configs(readme: Path) -> dict[str, dict[str, list[str]]]:
    """The README's `configs`: config -> split -> file patterns (the hub's dataset card layout)."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not text.startswith("---"):
        return {}
    try:
        card = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError as e:
        raise XlpError(f"{readme}: its YAML header does not parse: {e}") from None
    out: dict[str, dict[str, list[str]]] = {}
    for entry in card.get("configs") or []:
        files = entry.get("data_files", [])
        if isinstance(files, (str, dict)):
            files = [files]
        splits: dict[str, list[str]] = {}
        for f in files:
            split, paths = (f.get("split", "train"), f.get("path", [])) if isinstance(f, dict) else ("train", f)
            splits.setdefault(split, []).extend([paths] if isinstance(paths, str) else paths)
        out[entry.get("config_name", "default")] = splits
    return out


class Dataset:
    """A source opened at pre-flight: its root folder (a hub snapshot or the local folder), commit and configs."""

    def __init__(self, source: DatasetSource, key: str):
        self.source, self.key = source, key
        if source.hub:
            self.root = _hub_file(source, key, "README.md").parent
            self.revision: str | None = self.root.name  # snapshots/<commit>
        else:
            self.root, self.revision = Path(source.folder), None
            if not self.root.is_dir():
                raise XlpError(f"{key}.folder: {self.root} is not a folder")
        self.card = _card_configs(self.root / "README.md")

    def describe(self) -> str:
        """What the run reads, for its notes: the dataset and the commit its revision resolved to."""
        return f"{self.key}: {self.source.name}, commit {self.revision}" if self.revision else \
            f"{self.key}: {self.source.folder}"

    @property
    def configs(self) -> list[str]:
        """Every config the dataset declares (its card's, else its subfolders), a whole-dataset one left out."""
        names = list(self.card) or sorted(p.name for p in self.root.iterdir() if p.is_dir() and
                                          not p.name.startswith("."))
        return [n for n in names if n not in IGNORED_CONFIGS]

    def config_of(self, lang: str, known: dict[str, str] | None = None) -> str:
        """The config of a language: the spec's `configs`, the language's own code, or xlp's table `known`."""
        if lang in self.source.configs:
            return self.source.configs[lang]
        if lang in self.configs or not known or lang not in known:
            return lang
        return known[lang]

    def split(self, config: str, split: str) -> DatasetSplit:
        """A config's split: its files fetched (hub) and hashed, found as `load_dataset` finds them (the card's
        patterns, else `datasets`' split names in the config's folder) and read by the builder it would use."""
        from datasets.data_files import DataFilesDict, get_data_patterns
        from datasets.load import infer_module_for_data_files

        if config not in self.configs:
            raise XlpError(f"{self.key}: {self.source.name} has no config {config!r} (it has "
                           f"{', '.join(self.configs[:20]) or 'none'}{' ...' if len(self.configs) > 20 else ''}); "
                           f"name one in {self.key}.configs")
        patterns = self.card.get(config, {}).get(split)
        if self.source.hub:
            _hub_snapshot(self.source, self.key, self.revision, patterns or [f"{config}/*", f"{config}/**"])
        found: dict[str, list[str]] = {}
        try:
            if config in self.card:
                base, found = self.root, self.card[config]
            else:
                base = self.root / config
                found = {str(s): p for s, p in get_data_patterns(str(base)).items()}
            files = DataFilesDict.from_patterns({split: found[split]}, base_path=str(base)) if split in found else {}
        except FileNotFoundError:
            files = {}
        if not files.get(split):
            fetch = " (fetch it with `xlp data xnli|text|tatoeba SPEC`)" if self.source.hub else ""
            raise XlpError(f"{self.key}: {self.source.name}, config {config} has no files for split {split!r} "
                           f"(its splits: {', '.join(found) or 'none'}){fetch}")
        fmt, _ = infer_module_for_data_files(files)
        digests = data_files([Path(p) for p in files[split]])
        return DatasetSplit(self.source.hub, self.revision, config, split, fmt, tuple(digests.values()))


def read_columns(part: DatasetSplit, columns: dict[str, str], cap: int | None, key: str) -> dict[str, list]:
    """The first `cap` rows of a split as lists, by the task's column names (`columns`: the task's -> the
    dataset's), read with `datasets.load_dataset(<format>, data_files=..., streaming=True)`: only the rows
    needed, and nothing written to `datasets`' cache."""
    import datasets

    try:
        ds = datasets.load_dataset(part.format, data_files=[f.path for f in part.files], split="train",
                                   streaming=True)
        missing = [c for c in columns.values() if c not in (ds.column_names or ())]
        if missing:
            raise XlpError(f"{key}: {part.where} has no column {', '.join(missing)} (it has "
                           f"{', '.join(ds.column_names or ())}); name the right one in {key}.columns")
        rows = list((ds.take(cap) if cap is not None else ds).select_columns(list(dict.fromkeys(columns.values()))))
    except (OSError, ValueError) as e:
        raise XlpError(f"{key}: cannot read {part.where}: {str(e).splitlines()[0]}") from None
    if not rows:
        raise XlpError(f"{key}: {part.where} has no rows")
    return {role: [r[col] for r in rows] for role, col in columns.items()}


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _hub_errors(source: DatasetSource, key: str, e: Exception) -> XlpError:
    """What to do about a hub error: a gated or missing dataset, a revision it lacks, a cache without it."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page, repo = f"{constants.ENDPOINT}/datasets/{source.hub}", source.hub
    login = "log in with `huggingface-cli login` or set HF_TOKEN"
    if isinstance(e, GatedRepoError):
        return XlpError(f"{key}: {repo} is a gated dataset: accept its conditions on {page} and {login}")
    if isinstance(e, RepositoryNotFoundError):
        return XlpError(f"{key}: no dataset {repo} on the hub, or it is private ({login}); see {page}")
    if isinstance(e, RevisionNotFoundError):
        return XlpError(f"{key}: {repo} has no revision {source.revision!r} (see {page}/commits)")
    if isinstance(e, LocalEntryNotFoundError) or _offline():
        return XlpError(f"{key}: {source.name} is not in the hub cache ({constants.HF_HUB_CACHE}) and the hub is "
                        f"not reachable (HF_HUB_OFFLINE or no network): fetch it first where the hub is reachable, "
                        f"`xlp data xnli|text|tatoeba SPEC` with the same HF_HUB_CACHE")
    return XlpError(f"{key}: cannot fetch {source.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def _hub_file(source: DatasetSource, key: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source.hub, filename, repo_type="dataset", revision=source.revision))
    except Exception as e:  # noqa: BLE001 - network, auth, a missing repo or revision: all the user's to fix
        raise _hub_errors(source, key, e) from None


def _hub_snapshot(source: DatasetSource, key: str, commit: str, patterns: list[str]) -> None:
    """Fetch the files matching `patterns` at `commit` into the hub cache (nothing to do offline: the cache is
    what there is, and `datasets` then finds the files or says which are missing)."""
    from huggingface_hub import snapshot_download

    if _offline():
        return
    try:
        snapshot_download(source.hub, repo_type="dataset", revision=commit, allow_patterns=patterns)
    except Exception as e:  # noqa: BLE001
        raise _hub_errors(source, key, e) from None


def read_texts(part: DatasetSplit, column: str, cap: int | None, key: str) -> list[str]:
    """The first `cap` non-empty texts of a split's column, surrounding space removed (as bpc.text's lines)."""
    texts = [t.strip() for t in read_columns(part, {"text": column}, None, key)["text"] if t and t.strip()]
    if not texts:
        raise XlpError(f"{key}: {part.where} has no text in column {column}")
    return texts[:cap] if cap is not None else texts

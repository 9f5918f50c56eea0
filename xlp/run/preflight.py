"""Pre-flight: every check that `xlp validate` and `xlp launch` share, done before any unit runs and
before Ray starts: the tasks resolve, every checkpoint's config loads and its weights are intact, one
tokenizer throughout, the layers exist, every treebank split and data file resolves and parses, each
sentence task's data reads, and the features fit on the disk. What it resolved is what the plan
lays out and what the units carry, so no worker resolves or downloads anything."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from xlp.config import Spec
from xlp.data.conllu import find_treebank, read_part, require_sentences, require_text, split_name, split_paths
from xlp.data.ud_release import resolve_ud_root
from xlp.errors import XlpError
from xlp.hashing import data_files
from xlp.models.checkpoints import (
    Checkpoint,
    check_one_tokenizer,
    check_weights,
    series_configs,
    with_identities,
)
from xlp.models.families import resolve_pooling
from xlp.models.series import resolve_checkpoints
from xlp.run.manifest import Manifest, manifest
from xlp.storage import Store
from xlp.tasks import FeatureTask, SentenceTask, Task
from xlp.tasks.base import RunData, SentenceInputs, SplitFiles, UdFiles


@dataclass
class RunInputs:
    """Everything pre-flight resolved and checked, for the plan to lay out."""
    tasks: list[Task]
    checkpoints: list[Checkpoint]  # with their content identities
    depths: dict[str, int]  # layers per checkpoint name
    poolings: dict[str, str]  # the subword pooling each checkpoint's words get (`auto` resolved)
    hidden: int  # the largest hidden size
    layers: list[int]
    data: RunData
    words: dict[tuple, int] = field(default_factory=dict)  # per (file, cap, part)
    sentence_inputs: dict[str, SentenceInputs] = field(default_factory=dict)  # per sentence task
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> checkpoint name -> note
    duplicates: dict[int, int] = field(default_factory=dict)  # step -> the earlier step with identical files
    notes: list[str] = field(default_factory=list)

    @property
    def word_tasks(self) -> list[FeatureTask]:
        return [t for t in self.tasks if isinstance(t, FeatureTask)]

    @property
    def sources(self) -> list[str]:
        """Languages probes are fit on: those with a train (or dev) split, when a word task runs."""
        return [lang for lang, f in self.data.ud.items() if f.train] if self.word_tasks else []

    @property
    def targets(self) -> list[str]:
        return [lang for lang, f in self.data.ud.items() if f.test] if self.word_tasks else []


def check(run: Spec | Manifest) -> RunInputs:
    run = manifest(run)
    spec, tasks = run.spec, list(run.tasks)
    ckpts = resolve_checkpoints(spec.checkpoints)
    configs = check_series(ckpts, spec)
    depths = {name: c.num_hidden_layers for name, c in configs.items()}
    notes: list[str] = []
    if any(c.step_is_index for c in ckpts):
        notes.append("checkpoints: names such as ckpt_N number the checkpoints, not training steps; "
                     "`step` is that index")
    data, words = check_data(spec, notes, ud_reads(run))
    inputs = RunInputs(tasks=tasks, checkpoints=with_identities(ckpts), depths=depths,
                       poolings={n: resolve_pooling(spec.pooling, c) for n, c in configs.items()},
                       hidden=max(getattr(c, "hidden_size", 0) for c in configs.values()),
                       layers=check_layers(spec, depths), data=data, words=words, notes=notes)
    inputs.duplicates = _duplicates(inputs.checkpoints, notes)
    if inputs.word_tasks and not inputs.sources:
        raise XlpError("data.languages: no language has a train (or dev) split to fit probes on")
    for task in tasks:
        if isinstance(task, SentenceTask):
            ctx = run.context(task.name, data)
            found = task.inputs(ctx, notes)
            if found is not None:
                inputs.sentence_inputs[task.name] = found
                skips = {c.name: note for c in inputs.checkpoints if (note := task.skip(c, ctx))}
                inputs.skipped[task.name] = skips
                notes.extend(skips.values())
    check_disk(spec, feature_bytes(spec, inputs) - _features_on_disk(spec))
    return inputs


def _duplicates(checkpoints: list[Checkpoint], notes: list[str]) -> dict[int, int]:
    """Checkpoints whose files are identical (a publisher serving one set of weights under two names): each
    is probed once, and the later step's rows are the earlier one's."""
    first: dict[str, Checkpoint] = {}
    out = {}
    for c in checkpoints:
        if c.is_local and c.identity() in first:
            out[c.step] = first[c.identity()].step
            notes.append(f"checkpoints: step {c.step} ({c.name}) is identical to step {out[c.step]} "
                         f"({first[c.identity()].name}); probed once, its rows repeat step {out[c.step]}'s")
        first.setdefault(c.identity(), c)
    return out


def check_series(checkpoints: list[Checkpoint], spec: Spec) -> dict:
    """Every config loads and every local checkpoint's weights are intact, one tokenizer throughout
    (unless allowed). Returns each checkpoint's config, by name."""
    configs = series_configs(checkpoints, spec.trust_remote_code)
    for c in checkpoints:
        check_weights(c, spec.allow_pickle)
    if not spec.allow_tokenizer_mismatch:
        check_one_tokenizer(checkpoints)
    return configs


def check_layers(spec: Spec, depths: dict[str, int]) -> list[int]:
    depth = min(depths.values())
    if spec.layers == "all":
        if len(set(depths.values())) > 1:
            raise XlpError(f"layers: 'all' is ambiguous, the checkpoints differ in depth: {depths}")
        return list(range(depth + 1))
    if max(spec.layers) > depth:
        raise XlpError(f"layers: {max(spec.layers)} is above the shallowest checkpoint's {depth} layers")
    return list(spec.layers)


def ud_reads(run: Manifest) -> dict[str, set[str]]:
    """The sides ("train", "test") of each language's treebank that some unit reads: both, where a word task runs
    (the plan extracts every source's train and every target's test split), and the test split of each language
    of a sentence task that reads data.languages' treebanks (bpc on UD text)."""
    reads: dict[str, set[str]] = {lang: set() for lang in run.spec.data.languages}
    for task in run.tasks:
        if isinstance(task, FeatureTask):
            return {lang: {"train", "test"} for lang in reads}
        if task.reads_ud_with(run.tasks.options[task.name]):
            for lang in run.context(task.name).grid()[0]:
                reads.setdefault(lang, set()).add("test")
    return reads


def check_data(spec: Spec, notes: list[str], reads: dict[str, set[str]] | None = None
               ) -> tuple[RunData, dict[tuple, int]]:
    """Resolve the UD root and each language's train and test splits, and read now every split file a unit reads
    (`reads`: the sides per language, default all; a malformed file stops the launch here); a split no unit reads
    is neither hashed nor parsed, and is None in the RunData. Words per (file, cap, part)."""
    d = spec.data
    unknown = [k for k in d.treebanks if k not in d.languages]
    if unknown:
        raise XlpError(f"data.treebanks: {unknown} not in data.languages")
    ud_root = resolve_ud_root(d.ud_root, d.languages)
    splits: dict[str, tuple[str, tuple[str, Path] | None, tuple[str, Path] | None]] = {}
    for lang in d.languages:
        tb = find_treebank(ud_root, lang, d.treebanks.get(lang))
        train, test = tb.split_file(d.train_split, fallback="dev"), tb.split_file(d.test_split)
        if lang in d.split_test:
            if train is not None or test is None:
                raise XlpError(f"data.split_test.{lang}: {tb.name} has " + (
                    f"a {train[0]} split to train on" if train else f"no {d.test_split} split")
                    + f"; split_test cuts a treebank's only split, its {d.test_split} split, in two")
            share = d.split_test[lang]
            notes.append(f"{lang}: {tb.name} has only a {test[0]} split; probes train on about {share:.0%} of its "
                         f"sentences ({test[0]}-train, by a hash of each sentence id) and every probe is scored "
                         f"on the rest ({test[0]}-heldout) (data.split_test)")
            splits[lang] = (tb.name, (f"{test[0]}-train", test[1]), (f"{test[0]}-heldout", test[1]))
            continue
        if train and test and train[0] == test[0]:
            raise XlpError(f"data: {lang} would train and test its probes on the same split ({test[0]} of "
                           f"{tb.name}); set data.train_split or data.test_split to another split")
        if train is None:
            notes.append(f"{lang}: {tb.name} has no {d.train_split} or dev split; target only")
        elif train[0] != d.train_split:
            notes.append(f"{lang}: no {d.train_split} split in {tb.name}; probes train on {train[0]}")
        if test is None:
            notes.append(f"{lang}: {tb.name} has no {d.test_split} split; not a target")
        for split in (train, test):
            if split and isinstance(split[1], tuple):
                notes.append(f"{lang}: the {split[0]} split of {tb.name} is published in {len(split[1])} parts "
                             f"({', '.join(p.name for p in split[1])}), read as one in that order")
        splits[lang] = (tb.name, train, test)
    if reads is not None:
        splits = {lang: (name, *(split if side in reads.get(lang, ()) else None
                                 for side, split in (("train", train), ("test", test))))
                  for lang, (name, train, test) in splits.items()}
    files = data_files([path for _, train, test in splits.values() for split in (train, test) if split
                        for path in split_paths(split[1])])

    def resolved(split: tuple[str, Path | tuple[Path, ...]] | None) -> tuple[str, SplitFiles] | None:
        if split is None:
            return None  # a split in parts is the tuple of its parts' DataFiles; one file stays one DataFile
        return split[0], tuple(files[p] for p in split[1]) if isinstance(split[1], tuple) else files[split[1]]

    ud, words = {}, {}
    for lang, (name, train, test) in splits.items():
        ud[lang] = UdFiles(treebank=name, train=resolved(train), test=resolved(test), share=d.split_test.get(lang))
        for split, cap, side in ((ud[lang].train, d.max_train_sentences, "train"),
                                 (ud[lang].test, d.max_test_sentences, "test")):
            key = (*split[1:], cap, ud[lang].part(side)) if split is not None else None
            if key is not None and key not in words:
                words[key] = _count_words(lang, name, split[0], *key, d.conllu == "lenient", notes)
    return RunData(ud_root=Path(ud_root), ud=ud), words


def _count_words(lang: str, treebank: str, split: str, files: SplitFiles, cap: int | None,
                 part: tuple[str, float] | None, lenient: bool, notes: list[str]) -> int:
    skipped: list[str] = []
    sentences = read_part(files, cap, lenient, part, skipped)
    require_sentences(split_name(files), sentences, len(skipped))
    require_text(treebank, files, sentences)
    if skipped:
        notes.append(f"{lang} {split}: skipped {len(skipped)} malformed sentences (data.conllu: lenient); "
                     f"first: {skipped[0]}")
    return sum(len(s.forms) for s in sentences)


def feature_bytes(spec: Spec, inputs: RunInputs) -> int:
    """Disk the word features take: every extraction unit's words x layers x hidden size x dtype size."""
    ud = inputs.data.ud
    per_ckpt = sum(inputs.words[(ud[lang].train[1], spec.data.max_train_sentences, ud[lang].part("train"))]
                   for lang in inputs.sources)
    per_ckpt += sum(inputs.words[(ud[lang].test[1], spec.data.max_test_sentences, ud[lang].part("test"))]
                    for lang in inputs.targets)
    width = 2 if spec.feature_dtype == "float16" else 4
    extracted = len(inputs.checkpoints) - len(inputs.duplicates)  # an identical checkpoint is extracted once
    return per_ckpt * extracted * len(inputs.layers) * inputs.hidden * width


def _features_on_disk(spec: Spec) -> int:
    return sum(Store(spec.output).files("features").values()) if "://" not in spec.output else 0


def check_disk(spec: Spec, need: int) -> None:
    """Refuse to start when the features cannot fit on the output's (local) disk."""
    if "://" in spec.output:
        return
    probe = Path(spec.output).resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise XlpError(f"output: the features need about {need / 2**30:.1f} GiB but {probe} has "
                       f"{free / 2**30:.1f} GiB free; free space, cap data.max_*_sentences, or choose fewer layers")


def check_data_only(run: Spec | Manifest) -> None:
    """What can be checked before a pretraining spec's checkpoints exist: the tasks and the data."""
    run = manifest(run)
    check_data(run.spec, [], ud_reads(run))

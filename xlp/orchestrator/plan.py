"""The grid of work: extraction units (checkpoint x language x split) and probe units
(checkpoint x task x source language, with its layers, seeds and targets inside one unit, so one
batched solve fits the probes of every layer and each shard is read once per unit)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import xlp
from xlp.errors import XlpError
from xlp.hashing import file_digests
from xlp.models.checkpoints import (Checkpoint, check_weights, load_config, resolve_checkpoints,
                                   series_identities, tokenizer_files_digest)
from xlp.spec import Spec
from xlp.storage import Store
from xlp.storage.features import shard_path
from xlp.data.ud_release import resolve_ud_root
from xlp.paths import shared_dir
from xlp.tasks import TASKS
from xlp.tasks import xnli
from xlp.tasks.bpc import has_mlm_head
from xlp.tasks.retrieval import parallel_pud, parallel_udhr
from xlp.tasks.ud import conllu_files, find_treebank, read_conllu, require_sentences


# how retrieval and XNLI pool a text (in their hashes, so outputs pooled another way are redone)
SENTENCE_VECTORS = "mean over the subwords of every window"


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def probe_output(key: str) -> str:
    """Where a probe-stage unit (probe or sentence task) writes its rows."""
    return f"probes/{key}/part-0.parquet"


def _file_identity(path: Path) -> str:
    """A data file by its content (moving the data does not redo the run)."""
    return file_digests([path])[path]


@dataclass(frozen=True)
class ExtractUnit:
    ckpt: Checkpoint
    lang: str
    split: str
    file: str
    max_sentences: int | None
    hash: str

    @property
    def key(self) -> str:
        return f"step={self.ckpt.step}/lang={self.lang}/split={self.split}"

    @property
    def output(self) -> str:
        return shard_path(self.ckpt.step, self.lang, self.split)


@dataclass(frozen=True)
class ProbeUnit:
    ckpt: Checkpoint
    tasks: tuple[str, ...]  # the first one's probe is fit; the others score with it (arc, arc_uas)
    layers: tuple[int, ...]
    src: str
    train_split: str
    targets: tuple[tuple[str, str], ...]  # (language, test split)
    needs: tuple[str, ...]  # extraction unit keys
    hash: str

    @property
    def task(self) -> str:
        return "+".join(self.tasks)

    @property
    def key(self) -> str:
        return f"step={self.ckpt.step}/task={self.task}/layers={'_'.join(map(str, self.layers))}/src={self.src}"

    @property
    def output(self) -> str:
        return probe_output(self.key)


@dataclass(frozen=True)
class SentenceUnit:
    """A task on whole sentences that runs the model itself, for one checkpoint and all languages:
    retrieval (every layer, every language pair) or bpc (the MLM head, each language's test text)."""
    ckpt: Checkpoint
    task: str
    layers: tuple[int, ...]
    corpus: str  # retrieval: udhr or pud; bpc: the test split
    langs: tuple[str, ...]
    hash: str
    needs: tuple[str, ...] = ()  # no extraction unit to wait for

    @property
    def key(self) -> str:
        return f"step={self.ckpt.step}/task={self.task}/corpus={self.corpus}"

    @property
    def output(self) -> str:
        return probe_output(self.key)


@dataclass
class Plan:
    checkpoints: list[Checkpoint]
    layers: list[int]
    extract: list[ExtractUnit] = field(default_factory=list)
    probe: list[ProbeUnit | SentenceUnit] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    words: int = 0  # words to extract over all units
    feature_bytes: int = 0

    def probe_rows(self, seeds: int, cross_lingual: bool) -> int:
        """Rows the probe stage adds to probes.parquet (XNLI's sources are the languages with a dev split,
        so for it this is an upper bound)."""
        n = 0
        for u in self.probe:
            if isinstance(u, ProbeUnit):
                n += len(u.tasks) * len(u.targets) * len(u.layers)
            else:
                pairs = u.task == "retrieval" or (u.task == "xnli" and cross_lingual)
                n += len(u.layers) * len(u.langs) ** (2 if pairs else 1)
        return n * seeds

    def summary(self) -> dict:
        return {
            "checkpoints": len(self.checkpoints), "steps": [c.step for c in self.checkpoints],
            "layers": self.layers, "sources": self.sources, "targets": self.targets,
            "extraction_units": len(self.extract), "probe_units": len(self.probe),
        }

    def to_json(self) -> str:
        """What `xlp status` reads: every unit key with the hash it must be recorded with."""
        return json.dumps({
            "xlp_version": xlp.__version__,
            "summary": self.summary(),
            "checkpoints": {str(c.step): c.name for c in self.checkpoints},  # where each step is now
            "notes": self.notes,
            "units": {"extract": {u.key: u.hash for u in self.extract}, "probe": {u.key: u.hash for u in self.probe}},
        }, indent=1, sort_keys=True)


def _tokenizer_digest(ckpt: Checkpoint) -> str | None:
    """What the tokenizer maps text to: tokenizer.json's model and normaliser (not its formatting)."""
    d = Path(ckpt.location)
    if not ckpt.is_local:
        return None
    if (d / "tokenizer.json").is_file():
        tok = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
        return digest({k: tok.get(k) for k in ("model", "normalizer", "pre_tokenizer", "added_tokens")})
    files = [d / f for f in ("sentencepiece.bpe.model", "vocab.txt", "vocab.json") if (d / f).is_file()]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest() if files else None


def _check_one_tokenizer(checkpoints: list[Checkpoint]) -> None:
    """Identical tokenizer files are the same tokenizer (a hash of the bytes); only files that differ
    are parsed, to tell a reformatted tokenizer.json from another vocabulary."""
    by_files: dict[str, Checkpoint] = {}
    for c in checkpoints:
        by_files.setdefault(tokenizer_files_digest(c) or c.name, c)
    if len(by_files) < 2:
        return
    digests = {c.name: _tokenizer_digest(c) for c in by_files.values()}
    distinct = {h for h in digests.values() if h is not None}
    if len(distinct) > 1:
        first = next(iter(digests))
        other = next(n for n, h in digests.items() if h is not None and h != digests[first])
        raise XlpError(f"checkpoints: {first} and {other} have different tokenizers; a series should "
                       f"share one (set `allow_tokenizer_mismatch: true` to probe it anyway)")


def check_series(checkpoints: list[Checkpoint], spec: Spec) -> tuple[dict[str, int], int]:
    """Pre-flight on the series: every config loads, one tokenizer throughout (unless allowed).
    Returns each checkpoint's depth and the largest hidden size."""
    configs = {c.name: load_config(c, spec.trust_remote_code) for c in checkpoints}
    for c in checkpoints:
        check_weights(c, spec.allow_pickle)
    if not spec.allow_tokenizer_mismatch:
        _check_one_tokenizer(checkpoints)
    return ({n: c.num_hidden_layers for n, c in configs.items()},
            max(getattr(c, "hidden_size", 0) for c in configs.values()))


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


def make_plan(spec: Spec) -> Plan:
    """Resolve checkpoints and treebanks, check them, and lay out every unit with its ledger hash."""
    ckpts = resolve_checkpoints(spec.checkpoints)
    depths, hidden = check_series(ckpts, spec)
    identities = series_identities(ckpts)  # reads only files new to the digest cache, in parallel
    depth = min(depths.values())
    if spec.layers == "all":
        if len(set(depths.values())) > 1:
            raise XlpError(f"layers: 'all' is ambiguous, the checkpoints differ in depth: {depths}")
        layers = list(range(depth + 1))
    else:
        layers = list(spec.layers)
        if max(layers) > depth:
            raise XlpError(f"layers: {max(layers)} is above the shallowest checkpoint's {depth} layers")
    plan = Plan(checkpoints=ckpts, layers=layers)

    d = spec.data
    train_files: dict[str, tuple[str, Path]] = {}
    test_files: dict[str, tuple[str, Path]] = {}
    ud_root = resolve_ud_root(d.ud_root, d.languages)
    for lang in d.languages:
        tb = find_treebank(ud_root, lang, d.treebanks.get(lang))
        train = tb.split_file(d.train_split, fallback="dev")
        test = tb.split_file(d.test_split)
        if train and test and train[0] == test[0]:
            raise XlpError(f"data: {lang} would train and test its probes on the same split ({test[0]} of "
                           f"{tb.name}); set data.train_split or data.test_split to another split")
        if train:
            train_files[lang] = train
            if train[0] != d.train_split:
                plan.notes.append(f"{lang}: no {d.train_split} split in {tb.name}; probes train on {train[0]}")
        else:
            plan.notes.append(f"{lang}: {tb.name} has no {d.train_split} or dev split; target only")
        if test:
            test_files[lang] = test
        else:
            plan.notes.append(f"{lang}: {tb.name} has no {d.test_split} split; not a target")
    unknown_split = [k for k in d.treebanks if k not in d.languages]
    if unknown_split:
        raise XlpError(f"data.treebanks: {unknown_split} not in data.languages")
    word_tasks = [t for t in spec.tasks if t in TASKS]
    plan.sources = [lang for lang in d.languages if lang in train_files] if word_tasks else []
    plan.targets = [lang for lang in d.languages if lang in test_files] if word_tasks else []
    if word_tasks and not plan.sources:
        raise XlpError("data.languages: no language has a train (or dev) split to fit probes on")

    file_digests([path for _, path in [*train_files.values(), *test_files.values()]])  # new ones at once
    extract_common = {"layers": layers, "pooling": spec.pooling, "dtype": spec.feature_dtype,
                      "code": xlp.__version__}
    ext_keys: dict[tuple[int, str, str], str] = {}
    checked: dict[tuple[Path, int | None], int] = {}  # words per (file, cap)
    words = 0
    for ckpt in ckpts:
        ident = identities[ckpt.name]
        wanted = {(lang, *train_files[lang], d.max_train_sentences) for lang in plan.sources}
        wanted |= {(lang, *test_files[lang], d.max_test_sentences) for lang in plan.targets}
        for lang, split, path, cap in sorted(wanted, key=lambda w: (w[0], w[1])):
            if (path, cap) not in checked:  # pre-flight: a malformed file stops the launch before Ray starts
                errors: list[str] = []
                sents = read_conllu(path, cap, errors.append if d.conllu == "lenient" else None)
                require_sentences(path, sents, len(errors))
                checked[(path, cap)] = sum(len(s.forms) for s in sents)
                if errors:
                    plan.notes.append(f"{lang} {split}: skipped {len(errors)} malformed sentences "
                                      f"(data.conllu: lenient); first: {errors[0]}")
            words += checked[(path, cap)]
            h = digest({**extract_common, "ckpt": ident, "file": _file_identity(path), "cap": cap})
            unit = ExtractUnit(ckpt=ckpt, lang=lang, split=split, file=str(path), max_sentences=cap, hash=h)
            plan.extract.append(unit)
            ext_keys[(ckpt.step, lang, split)] = unit.key
    ext_hash = {u.key: u.hash for u in plan.extract}
    plan.words = words
    plan.feature_bytes = words * len(layers) * hidden * (2 if spec.feature_dtype == "float16" else 4)
    done = sum(Store(spec.output).files("features").values()) if "://" not in spec.output else 0
    check_disk(spec, plan.feature_bytes - done)

    probe_common = {"probe": spec.probe.model_dump(), "code": xlp.__version__}
    size = spec.probe.layers_per_unit or len(layers)
    layer_groups = [tuple(layers[i:i + size]) for i in range(0, len(layers), size)]
    for ckpt in ckpts:
        for tasks in _fit_groups(word_tasks):
            for group in layer_groups:
                for src in plan.sources:
                    tgts = plan.targets if spec.cross_lingual else [t for t in plan.targets if t == src]
                    if not tgts:
                        continue
                    targets = tuple((t, test_files[t][0]) for t in tgts)
                    needs = (ext_keys[(ckpt.step, src, train_files[src][0])],
                             *(ext_keys[(ckpt.step, t, s)] for t, s in targets))
                    needs = tuple(dict.fromkeys(needs))
                    h = digest({**probe_common, "task": "+".join(tasks), "layers": group, "src": src,
                                "targets": targets, "inputs": [ext_hash[k] for k in needs]})
                    plan.probe.append(ProbeUnit(ckpt=ckpt, tasks=tasks, layers=group, src=src,
                                                train_split=train_files[src][0], targets=targets,
                                                needs=needs, hash=h))
    if "retrieval" in spec.tasks:
        _plan_retrieval(spec, plan, ckpts, layers, ud_root)
    if "bpc" in spec.tasks:
        _plan_bpc(spec, plan, ckpts, depths, test_files)
    if "xnli" in spec.tasks:
        _plan_xnli(spec, plan, ckpts, layers)
    return plan


def _fit_groups(word_tasks: list[str]) -> list[tuple[str, ...]]:
    """The word tasks in probe units: a task that scores with another's probe (`fit_with`) joins that
    task's unit when both run, so the probe is fit once; otherwise each task is a unit of its own."""
    groups: dict[str, list[str]] = {}
    for task in dict.fromkeys(word_tasks):  # a task named twice runs once
        owner = getattr(TASKS[task], "fit_with", None)
        groups.setdefault(owner if owner in word_tasks else task, []).append(task)
    return [tuple(sorted(g, key=lambda t: t != owner)) for owner, g in groups.items()]


def _plan_xnli(spec: Spec, plan: Plan, ckpts: list[Checkpoint], layers: list[int]) -> None:
    d = spec.data
    if not xnli.available(d.xnli):
        plan.notes.append("xnli: not run, no data (set data.xnli to the XNLI-1.0 folder with xnli.dev.tsv "
                          "and xnli.test.tsv)")
        return
    dev = xnli.read_xnli(d.xnli, "dev", d.languages, d.max_train_sentences)  # pre-flight: read both now
    test = xnli.read_xnli(d.xnli, "test", d.languages, d.max_test_sentences)
    langs = tuple(lang for lang in d.languages if lang in dev or lang in test)
    if not any(lang in dev for lang in langs) or not test:
        plan.notes.append(f"xnli: not run, none of {d.languages} has both a dev and a test split in {d.xnli}")
        return
    common = {"task": "xnli", "sentence_vectors": SENTENCE_VECTORS, "langs": langs, "layers": layers,
              "probe": spec.probe.model_dump(), "cross_lingual": spec.cross_lingual, "caps": [d.max_train_sentences, d.max_test_sentences],
              "files": [_file_identity(xnli.xnli_file(d.xnli, s)) for s in xnli.SPLITS], "code": xlp.__version__}
    for ckpt in ckpts:
        plan.probe.append(SentenceUnit(ckpt=ckpt, task="xnli", layers=tuple(layers), corpus="xnli", langs=langs,
                                       hash=digest({**common, "ckpt": ckpt.identity()})))


def retrieval_texts(spec: Spec, ud_root: Path) -> tuple[dict[str, list[str]], list[Path]]:
    """The aligned sentences per language for the spec's retrieval corpus, and the files they came from."""
    r, langs = spec.retrieval, spec.data.languages
    if r.corpus == "udhr":
        path = Path(r.udhr) if r.udhr else shared_dir() / "udhr" / "udhr.tsv"
        return parallel_udhr(path, langs, r.max_sentences), [path]
    files = sorted(f for lang in langs for f in conllu_files(ud_root, f"{lang}_pud-ud-test.conllu"))
    return parallel_pud(ud_root, langs, r.max_sentences), files


def bpc_texts(spec: Spec, ud_root: Path) -> dict[str, list[str]]:
    """Each language's test sentences (the raw `# text`), capped like the probes' test sets."""
    d, out = spec.data, {}
    for lang in d.languages:
        test = find_treebank(ud_root, lang, d.treebanks.get(lang)).split_file(d.test_split)
        if test:
            out[lang] = [s.text for s in read_conllu(test[1], d.max_test_sentences, (lambda _: None)
                                                     if d.conllu == "lenient" else None) if s.text]
    return out


def _has_mlm_head(ckpt: Checkpoint, spec: Spec) -> bool:
    if ckpt.is_local:
        return has_mlm_head(Path(ckpt.location))
    archs = load_config(ckpt, spec.trust_remote_code).architectures or []
    return any("MaskedLM" in a for a in archs)


def _plan_bpc(spec: Spec, plan: Plan, ckpts: list[Checkpoint], depths: dict, test_files: dict) -> None:
    langs = tuple(lang for lang in spec.data.languages if lang in test_files)
    inputs = [_file_identity(test_files[lang][1]) for lang in langs]
    for lang in langs:
        if lang not in plan.targets:  # the word tasks' pre-flight did not read it
            errors: list[str] = []
            path = test_files[lang][1]
            sents = read_conllu(path, spec.data.max_test_sentences,
                                errors.append if spec.data.conllu == "lenient" else None)
            require_sentences(path, sents, len(errors))
    for ckpt in ckpts:
        if not _has_mlm_head(ckpt, spec):
            plan.notes.append(f"bpc: {ckpt.name} has no masked-LM head; no bits per character for it")
            continue
        h = digest({"task": "bpc", "langs": langs, "files": inputs, "cap": spec.data.max_test_sentences,
                    "ckpt": ckpt.identity(), "code": xlp.__version__})
        plan.probe.append(SentenceUnit(ckpt=ckpt, task="bpc", layers=(depths[ckpt.name],),
                                       corpus=spec.data.test_split, langs=langs, hash=h))


def _plan_retrieval(spec: Spec, plan: Plan, ckpts: list[Checkpoint], layers: list[int], ud_root: Path) -> None:
    texts, files = retrieval_texts(spec, ud_root)  # pre-flight: the corpus is read and aligned now
    missing = [lang for lang in spec.data.languages if lang not in texts]
    if missing:
        plan.notes.append(f"retrieval: no {spec.retrieval.corpus} text for {', '.join(missing)}; left out")
    common = {"task": "retrieval", "sentence_vectors": SENTENCE_VECTORS,
              "retrieval": spec.retrieval.model_dump(exclude={"udhr"}), "layers": layers, "langs": sorted(texts), "files": [_file_identity(f) for f in files], "code": xlp.__version__}
    for ckpt in ckpts:
        plan.probe.append(SentenceUnit(ckpt=ckpt, task="retrieval", layers=tuple(layers),
                                        corpus=spec.retrieval.corpus, langs=tuple(texts),
                                        hash=digest({**common, "ckpt": ckpt.identity()})))

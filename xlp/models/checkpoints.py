"""Resolve the spec's checkpoints to an ordered series, each with an integer pretraining step."""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from xlp.errors import XlpError
from xlp.hashing import file_digests

# the hub's and trainers' names: step1000 (Pythia), global_step1000 (BLOOM, DeepSpeed), step1000-tokens4B and
# stage1-step1000-tokens4B (OLMo, OLMo 2), step-1000 (SmolLM2), step_1000, step_20k (MultiBERTs),
# checkpoint-1000 (HF Trainer), iter_0001000 (Megatron), ckpt_000 (LLM360: an index, not a step)
STEP = re.compile(r"(?<![a-z])(?P<kind>step|checkpoint|ckpt|iter)[-_]?(?P<n>\d+)(?P<mult>k)?(?![a-z0-9])",
                  re.IGNORECASE)
TOKENS = re.compile(r"(?<![a-z])tokens?[-_]?(?P<n>\d+(?:\.\d+)?)(?P<unit>[kmbt])?(?![a-z0-9])", re.IGNORECASE)
TOKEN_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
METADATA_FILE = "xlp_checkpoint.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json", "merges.txt")


@dataclass(frozen=True)
class StepName:
    """What a checkpoint's name says: its step, the tokens seen where the name carries them, and
    whether the number only counts checkpoints (LLM360's ckpt_N) rather than optimizer steps."""
    step: int
    tokens: int | None = None
    is_index: bool = False


def parse_step_name(name: str) -> StepName | None:
    """Step (and tokens seen) from a hub revision or folder name; the last step-like part wins."""
    steps = list(STEP.finditer(name))
    if not steps:
        return None
    m = steps[-1]
    step = int(m.group("n")) * (1000 if m.group("mult") else 1)
    t = list(TOKENS.finditer(name))
    tokens = round(float(t[-1].group("n")) * TOKEN_UNITS[(t[-1].group("unit") or "").lower()]) if t else None
    return StepName(step, tokens, m.group("kind").lower() == "ckpt")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    location: str  # local directory, or hub repo id
    revision: str | None = None
    digest: str | None = field(default=None, compare=False, repr=False)  # identity(), once computed
    tokens: int | None = field(default=None, compare=False)  # tokens seen, where the name or metadata says
    step_is_index: bool = field(default=False, compare=False)  # `step` counts checkpoints (ckpt_N), not steps

    @property
    def name(self) -> str:
        return f"{self.location}@{self.revision}" if self.revision else self.location

    @property
    def is_local(self) -> bool:
        return self.revision is None

    def identity(self) -> str:
        """What the ledger hashes: the content of the files that make the model and its tokenizer
        (config, weights, tokenizer, remote code), not where they lie, so a series that was moved or
        copied is not redone; repo@revision for a hub checkpoint."""
        if self.digest is not None:
            return self.digest
        if not self.is_local:
            return self.name
        return _content_digest(_files(self, _defines_model))

    def hub_kwargs(self) -> dict:
        return {"revision": self.revision} if self.revision else {}


def _defines_tokenizer(name: str) -> bool:
    """The tokenizer's files, config.json (it can choose the tokenizer's class) and remote code."""
    return name in TOKENIZER_FILES or name == "config.json" or name.endswith(".py")


def _defines_model(name: str) -> bool:
    """What decides a checkpoint's features: the tokenizer's files and the weights (not optimizer states or logs)."""
    return _defines_tokenizer(name) or (name.startswith(("model", "pytorch_model"))
                                        and name.endswith((".safetensors", ".bin", ".json")))


def _files(ckpt: Checkpoint, wanted) -> list[Path]:
    return [f for f in sorted(Path(ckpt.location).iterdir()) if f.is_file() and wanted(f.name)]


def _content_digest(files: list[Path]) -> str:
    digests = file_digests(files)
    return hashlib.sha256("\n".join(f"{f.name}:{digests[f]}" for f in files).encode()).hexdigest()


def with_identities(ckpts: list[Checkpoint]) -> list[Checkpoint]:
    """The series with each checkpoint's identity computed once; new files of the whole series are
    hashed at once, in parallel."""
    file_digests([f for c in ckpts if c.is_local for f in _files(c, _defines_model)])
    return [replace(c, digest=c.identity()) for c in ckpts]


def tokenizer_files_digest(ckpt: Checkpoint) -> str | None:
    """The bytes of what a local checkpoint's tokenizer is loaded from: equal digests load equal
    tokenizers. None without a tokenizer.json (a tokenizer converted from other files)."""
    if not ckpt.is_local or not (Path(ckpt.location) / "tokenizer.json").is_file():
        return None
    return _content_digest(_files(ckpt, _defines_tokenizer))


def _tokenizer_meaning(ckpt: Checkpoint) -> str | None:
    """What the tokenizer maps text to: tokenizer.json's model, normaliser, pre-tokeniser and added
    tokens (not its formatting); else the bytes of its vocabulary files."""
    d = Path(ckpt.location)
    if not ckpt.is_local:
        return None
    if (d / "tokenizer.json").is_file():
        tok = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
        parts = {k: tok.get(k) for k in ("model", "normalizer", "pre_tokenizer", "added_tokens")}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    files = [d / f for f in ("sentencepiece.bpe.model", "vocab.txt", "vocab.json") if (d / f).is_file()]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest() if files else None


def check_one_tokenizer(checkpoints: list[Checkpoint]) -> None:
    """A series shares one tokenizer. Identical tokenizer files are the same tokenizer (a hash of the
    bytes); only files that differ are parsed, to tell a reformatted tokenizer.json from another vocabulary."""
    by_files: dict[str, Checkpoint] = {}
    for c in checkpoints:
        by_files.setdefault(tokenizer_files_digest(c) or c.name, c)
    if len(by_files) < 2:
        return
    meanings = {c.name: _tokenizer_meaning(c) for c in by_files.values()}
    if len({h for h in meanings.values() if h is not None}) > 1:
        first = next(iter(meanings))
        other = next(n for n, h in meanings.items() if h is not None and h != meanings[first])
        raise XlpError(f"checkpoints: {first} and {other} have different tokenizers; a series should "
                       f"share one (set `allow_tokenizer_mismatch: true` to probe it anyway)")


_TOKENIZERS: dict[tuple, object] = {}  # this process's last tokenizer, by its files' digest and options


def load_tokenizer(ckpt: Checkpoint, **kwargs):
    """AutoTokenizer for a checkpoint, loaded once per process for a series that shares one (loading
    XLM-R's 250k-piece tokenizer takes seconds; its files are identical in every checkpoint)."""
    from transformers import AutoTokenizer

    files = tokenizer_files_digest(ckpt)
    key = (files, tuple(sorted(kwargs.items())))
    if files is not None and key in _TOKENIZERS:
        return _TOKENIZERS[key]
    tok = AutoTokenizer.from_pretrained(ckpt.location, **ckpt.hub_kwargs(), **kwargs)
    if files is not None:
        _TOKENIZERS.clear()
        _TOKENIZERS[key] = tok
    return tok


def step_name_of(directory: Path) -> StepName | None:
    """Step and tokens from the folder name (step_1000, step1000-tokens4B, checkpoint-1000, ...) or its
    metadata file (xlp's own, or a Trainer's trainer_state.json with its tokens seen when recorded)."""
    named = parse_step_name(directory.name)
    if named is not None and named.tokens is not None:
        return named
    for meta, key, tokens_key in ((METADATA_FILE, "step", "tokens"), ("trainer_state.json", "global_step",
                                                                       "num_input_tokens_seen")):
        f = directory / meta
        if f.is_file():
            try:
                data = json.loads(f.read_text())
                step, tokens = int(data[key]), data.get(tokens_key)
                # a Trainer writes num_input_tokens_seen = 0 unless it was asked to count: unknown, not 0
                found = StepName(step, int(tokens) if tokens is not None and (tokens or not step) else None)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                if named is not None:
                    return named  # the name gives the step; the metadata only could have added tokens
                raise XlpError(f"{f}: cannot read the step ({key}): {e}") from None
            if named is None:
                return found
            # the name's step wins; the metadata adds the tokens seen where it speaks of the same step
            return replace(named, tokens=found.tokens) if found.step == named.step else named
    return named


def step_of(directory: Path) -> int | None:
    """Step from the folder name or its metadata file."""
    named = step_name_of(directory)
    return None if named is None else named.step


def _is_model_dir(d: Path) -> bool:
    return (d / "config.json").is_file()


def resolve_checkpoints(specs: list, where: str = "checkpoints") -> list[Checkpoint]:
    """Expand globs, assign steps, sort by step; a repeated step is an error."""
    out: list[Checkpoint] = []
    for i, item in enumerate(specs):
        key = f"{where}[{i}]"
        if item.repo is not None and item.steps:  # one repository per checkpoint (MultiBERTs)
            for value in item.steps:
                repo = item.repo.replace("{step}", value)
                named = parse_step_name(repo.rsplit("/", 1)[-1])
                if item.step is None and named is None:
                    raise XlpError(f"{key}.steps: cannot derive a step from {repo!r}")
                out.append(_checkpoint(item.step, named, repo, "main"))
            continue
        if item.repo is not None:
            revisions = item.revisions
            if isinstance(revisions, str):
                revisions = hub_branches(item.repo, revisions, f"{key}.revisions")
            for rev in revisions:
                named = parse_step_name(rev)
                if item.step is None and named is None:
                    raise XlpError(f"{key}.revisions: cannot derive a step from revision {rev!r} (expected a name "
                                   f"such as step1000, global_step1000, step1000-tokens4B or checkpoint-1000, "
                                   f"or give `step:`)")
                out.append(_checkpoint(item.step, named, item.repo, rev))
            continue
        pattern = os.path.expanduser(item.path)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        dirs = [Path(p) for p in matches if Path(p).is_dir()]
        if not dirs:
            raise XlpError(f"{key}.path: no checkpoint directory matches {item.path!r}")
        if glob.has_magic(pattern):
            dirs = [d for d in dirs if _is_model_dir(d)]
            if not dirs:
                raise XlpError(f"{key}.path: no directory matching {item.path!r} holds a config.json")
        for d in dirs:
            if not _is_model_dir(d):
                raise XlpError(f"{key}.path: {d} is not a Hugging Face model directory (no config.json)")
            named = step_name_of(d)
            if item.step is None and named is None:
                if len(dirs) == 1 and len(specs) == 1:
                    named = StepName(0)
                else:
                    raise XlpError(f"{key}: cannot tell the step of {d}; name it step_<N> (or stepN, "
                                   f"global_stepN, stepN-tokensNB, checkpoint-N) or give `step:`")
            out.append(_checkpoint(item.step, named, str(d)))
    out.sort(key=lambda c: c.step)
    for a, b in itertools.pairwise(out):
        if a.step == b.step:
            raise XlpError(f"{where}: two checkpoints have step {a.step}: {a.name} and {b.name}")
    return out


def _checkpoint(step: int | None, named: StepName | None, location: str, revision: str | None = None) -> Checkpoint:
    """A spec's explicit `step:` wins over the name; the tokens seen still come from the name."""
    if step is not None:
        return Checkpoint(step, location, revision, tokens=named.tokens if named else None)
    return Checkpoint(named.step, location, revision, tokens=named.tokens, step_is_index=named.is_index)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_branches(repo: str, pattern: str, key: str) -> list[str]:
    """Branches of a hub repo matching `pattern` ('all': every branch with a step in its name), read
    from the hub, or from the local hub cache when HF_HUB_OFFLINE is set (Pythia/OLMo style series)."""
    from huggingface_hub import constants

    offline = _truthy(os.environ.get("HF_HUB_OFFLINE")) or constants.HF_HUB_OFFLINE
    if offline:
        cache = Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)
        refs = cache / f"models--{repo.replace('/', '--')}" / "refs"
        names = [p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file()] if refs.is_dir() else []
        if not names:
            raise XlpError(f"{key}: HF_HUB_OFFLINE is set and the hub cache ({cache}) has no revisions of {repo}")
    else:
        from huggingface_hub import list_repo_refs

        try:
            names = [b.name for b in list_repo_refs(repo).branches]
        except Exception as e:  # noqa: BLE001 - network, auth or missing repo: all are the user's to fix
            raise XlpError(f"{key}: cannot list the branches of {repo}: {str(e).splitlines()[0]} "
                           f"(set HF_HUB_OFFLINE=1 to use the local cache)") from None
    chosen = sorted(n for n in names if (pattern == "all" or fnmatch.fnmatchcase(n, pattern))
                    and parse_step_name(n) is not None)
    if not chosen:
        raise XlpError(f"{key}: no branch of {repo} matches {pattern!r} and names a step "
                       f"(branches: {', '.join(sorted(names)[:10])})")
    return chosen


def load_config(ckpt: Checkpoint, trust_remote_code: bool = False):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ckpt.location, trust_remote_code=trust_remote_code, **ckpt.hub_kwargs())
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise XlpError(f"checkpoint {ckpt.name}: cannot load its config: {str(e).splitlines()[0]}") from None


def check_weights(ckpt: Checkpoint, allow_pickle: bool = False) -> None:
    """A local checkpoint must hold weights, in safetensors unless pickle is allowed."""
    if not ckpt.is_local:
        return
    d = Path(ckpt.location)
    present = [f for f in WEIGHT_FILES if (d / f).is_file()]
    if not present:
        raise XlpError(f"checkpoint {d}: no weights (expected model.safetensors)")
    if not any(f.startswith("model.safetensors") for f in present) and not allow_pickle:
        raise XlpError(f"checkpoint {d}: weights are pickle-based ({present[0]}), which can run code when "
                       f"loaded; convert them to safetensors or set `allow_pickle: true` in the spec")
    from safetensors import SafetensorError, safe_open

    for f in sorted(d.glob("*.safetensors")):
        try:  # reads the header only; a truncated or overwritten file fails here, not a day later
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except (SafetensorError, OSError) as e:
            raise XlpError(f"checkpoint {d}: {f.name} is corrupt or truncated ({e}); re-copy or re-save it") from None

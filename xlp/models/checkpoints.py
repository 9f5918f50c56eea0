"""A checkpoint: its step, location and content identity; its tokenizer, config and weights checked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

from xlp.errors import XlpError
from xlp.hashing import file_digests
from xlp.paths import cache_dir, write_cache_file

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
METADATA_FILE = "xlp_checkpoint.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json", "merges.txt")


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


CONFIG_TOKENIZER_KEYS = ("model_type", "tokenizer_class", "auto_map")  # what AutoTokenizer reads of config.json


def tokenizer_files_digest(ckpt: Checkpoint) -> str | None:
    """What a local checkpoint's tokenizer is loaded from: its files' bytes, remote code, and the keys of
    config.json that choose the tokenizer's class (not the whole config, which differs between the checkpoints
    of many series: a step, a path); equal digests load equal tokenizers. None without a tokenizer.json (a
    tokenizer converted from other files)."""
    d = Path(ckpt.location)
    if not ckpt.is_local or not (d / "tokenizer.json").is_file():
        return None
    files = _content_digest(_files(ckpt, lambda name: name in TOKENIZER_FILES or name.endswith(".py")))
    try:
        config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    chooses = {k: config.get(k) for k in CONFIG_TOKENIZER_KEYS} if isinstance(config, dict) else config
    return hashlib.sha256(f"{files}\n{json.dumps(chooses, sort_keys=True)}".encode()).hexdigest()


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
    """A series shares one tokenizer. Identical tokenizer files (tokenizer.json, vocabularies) are the same
    tokenizer (a hash of the bytes, remembered with every file's digest); only files that differ are parsed, to
    tell a reformatted tokenizer.json from another vocabulary."""
    by_files: dict[str, Checkpoint] = {}
    for c in checkpoints:
        by_files.setdefault(_content_digest(_files(c, TOKENIZER_FILES.__contains__)) if c.is_local else c.name, c)
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


def load_config(ckpt: Checkpoint, trust_remote_code: bool = False):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ckpt.location, trust_remote_code=trust_remote_code, **ckpt.hub_kwargs())
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise XlpError(f"checkpoint {ckpt.name}: cannot load its config: {str(e).splitlines()[0]}") from None


CONFIG_FIELDS = ("model_type", "num_hidden_layers", "hidden_size", "architectures", "is_decoder", "is_encoder_decoder")


def series_configs(ckpts: list[Checkpoint], trust_remote_code: bool = False) -> dict[str, object]:
    """Each checkpoint's config by name, as far as pre-flight reads it (CONFIG_FIELDS: depth, width, kind of
    model). A local config.json whose bytes loaded before under this transformers version is not loaded again:
    its fields are remembered by the file's SHA-256 in the xlp cache folder (configs.json), so a relaunch
    imports neither transformers nor torch. Configs with remote code are always loaded."""
    path = cache_dir() / "configs.json"
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        memo = {}
    local = [Path(c.location) / "config.json" for c in ckpts if c.is_local and not trust_remote_code]
    digests = file_digests([f for f in local if f.is_file()])
    tag, added, out = version("transformers"), False, {}
    for c in ckpts:
        f = Path(c.location) / "config.json"
        key = f"{digests[f]}|{tag}" if f in digests else None
        if key in memo:
            out[c.name] = SimpleNamespace(**memo[key])
            continue
        out[c.name] = config = load_config(c, trust_remote_code)
        if key is not None and not getattr(config, "auto_map", None):
            memo[key], added = {k: getattr(config, k) for k in CONFIG_FIELDS if hasattr(config, k)}, True
    if added:
        write_cache_file(path, json.dumps(memo))
    return out


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
            with safe_open(str(f), framework="numpy") as st:
                st.keys()
        except (SafetensorError, OSError) as e:
            raise XlpError(f"checkpoint {d}: {f.name} is corrupt or truncated ({e}); re-copy or re-save it") from None

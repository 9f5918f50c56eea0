"""Loading a checkpoint's model (one path for features and LM heads: safetensors unless pickle is
allowed, remote code only when trusted) and running it in token-budget batches that halve on out of memory."""

from __future__ import annotations

import os
from typing import Callable, Iterable, get_args

import torch

from xlp.config.spec import Precision
from xlp.errors import XlpError
from xlp.models import quiet_transformers
from xlp.models.checkpoints import Checkpoint, check_weights, load_config, load_tokenizer


def lm_kind(ckpt: Checkpoint, trust_remote_code: bool = False) -> str | None:
    """"masked", "causal" or None: which language-model head a checkpoint carries (its config's
    architecture, else a local checkpoint's weight names)."""
    from xlp.models.families import model_kind

    return model_kind(load_config(ckpt, trust_remote_code), ckpt.location if ckpt.is_local else None)


def weight_sizes(ckpt: Checkpoint) -> tuple[int, int, str] | None:
    """A checkpoint's parameters, the bytes of its weights in their stored dtype, and that dtype, read from
    its safetensors headers (every shard), for a local folder or a hub revision in the local hub cache;
    None where it has none here (a hub checkpoint not downloaded)."""
    from pathlib import Path

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    from safetensors import safe_open

    folder: str | None = ckpt.location
    if not ckpt.is_local:
        try:  # the cache only: validate downloads nothing
            folder = snapshot_download(ckpt.location, revision=ckpt.revision, local_files_only=True)
        except (LocalEntryNotFoundError, OSError, ValueError):
            folder = None
    files = sorted(Path(folder).glob("*.safetensors")) if folder else []
    params, nbytes, dtypes = 0, 0, set()
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not iterable
                piece = st.get_slice(key)
                n = 1
                for size in piece.get_shape():
                    n *= size
                dtype = piece.get_dtype()
                params += n
                nbytes += n * DTYPE_BYTES.get(dtype, 4)
                dtypes.add(dtype)
    return (params, nbytes, "/".join(sorted(dtypes))) if files else None


DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def load_model(ckpt: Checkpoint, auto_class, trust_remote_code: bool = False, allow_pickle: bool = False,
               what: str = "load"):
    """`auto_class.from_pretrained` for a checkpoint: weights checked first, pickle-based weights
    refused (local or hub) unless allowed; load errors become XlpError naming the checkpoint."""
    quiet_transformers()
    check_weights(ckpt, allow_pickle)
    try:
        return auto_class.from_pretrained(ckpt.location, use_safetensors=not allow_pickle or None,
                                          trust_remote_code=trust_remote_code, **ckpt.hub_kwargs())
    except (OSError, ValueError, RuntimeError) as e:
        hint = "" if allow_pickle else " (pickle-based weights are refused unless `allow_pickle: true`)"
        raise XlpError(f"checkpoint {ckpt.name}: cannot {what}: {str(e).splitlines()[0]}{hint}") from None


def load_fast_tokenizer(ckpt: Checkpoint, trust_remote_code: bool = False):
    """The checkpoint's fast tokenizer (offsets map tokens to words and characters); errors name the checkpoint."""
    try:
        tokenizer = load_tokenizer(ckpt, use_fast=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError) as e:
        raise XlpError(f"checkpoint {ckpt.name}: cannot load its tokenizer: {str(e).splitlines()[0]}") from None
    if not tokenizer.is_fast:
        raise XlpError(f"checkpoint {ckpt.name}: needs a fast tokenizer (tokenizer.json)")
    return tokenizer


def pick_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


PRECISIONS = get_args(Precision)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The arithmetic of a model's forward pass on `device`: "float32" or "bfloat16". `auto` is bfloat16 on a
    GPU and on a CPU whose matrix units compute it natively (oneDNN's own check: AVX512-BF16 or AMX), where
    it measured 1.8-2.0x float32's speed (MiniLM, one core; features within 0.3-0.7 % median relative
    difference, stored as float16 either way); float32 elsewhere, where bfloat16 would be emulated."""
    if precision not in PRECISIONS:
        raise XlpError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda" or (device.type == "cpu" and _cpu_computes_bfloat16()):
        return "bfloat16"
    return "float32"


def _cpu_computes_bfloat16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, precision: str):
    """The forward pass's context: bfloat16 autocast where `precision` (resolved) says so."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def default_batch_tokens(device: torch.device) -> int:
    """A GPU wants big batches; on a CPU, batches of about 1k tokens measured 1.5x faster than 8k
    (MiniLM, 2 cores: attention and activations stay in cache)."""
    return 16384 if device.type == "cuda" else 1024


class TokenBatches:
    """Length-sorted items, each starting with its token ids, run in padded batches under a token
    budget; out of memory halves the batch (and the budget for later batches) and retries."""

    def __init__(self, ckpt: Checkpoint, device: torch.device, batch_tokens: int | None, extra_tokens: int = 0):
        self.ckpt, self.device = ckpt, device
        self.batch_tokens = batch_tokens or default_batch_tokens(device)
        self.extra = extra_tokens  # tokens added to every item (special tokens)
        self.oom_retries = 0
        # tests simulate a device that runs out of memory above this many tokens per batch
        self._oom_above = int(os.environ.get("XLP_OOM_ABOVE_TOKENS", "0"))

    def run(self, items: Iterable, step: Callable[[list], None]) -> None:
        for batch in self._batches(items):
            self._run_or_split(batch, step)

    def check_memory(self, tokens: int) -> None:
        """Called by a batch before its forward pass, with its padded size."""
        if self._oom_above and tokens > self._oom_above:
            raise torch.OutOfMemoryError(f"injected: {tokens} tokens > XLP_OOM_ABOVE_TOKENS")

    def _batches(self, items: Iterable):
        batch: list = []
        for item in items:
            if batch and (len(item[0]) + self.extra) * (len(batch) + 1) > self.batch_tokens:
                yield batch
                batch = []
            batch.append(item)
        if batch:
            yield batch

    def _run_or_split(self, batch: list, step: Callable[[list], None]) -> None:
        try:
            step(batch)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                raise XlpError(f"checkpoint {self.ckpt.name}: out of memory on a single sequence of "
                               f"{len(batch[0][0]) + self.extra} tokens on {self.device}") from None
            self.oom_retries += 1
            self.batch_tokens = max(1, self.batch_tokens // 2)
            half = len(batch) // 2
            self._run_or_split(batch[:half], step)
            self._run_or_split(batch[half:], step)

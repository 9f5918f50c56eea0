"""fairseq RoBERTa / XLM-R checkpoints to Hugging Face `XLMRobertaForMaskedLM` folders, without fairseq.

fairseq's dictionary is `<s> <pad> </s> <unk>`, then dict.txt's pieces in order, then `<mask>`;
XLM-R's sentencepiece model has `<unk> <s> </s>` first, so piece i (i >= 3) is fairseq id i + 1,
which is the Hugging Face XLM-R tokenizer's layout. The converter checks that dict.txt agrees.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import shutil
import tempfile
from pathlib import Path

from xlp.errors import XlpError
from xlp.models.checkpoints import METADATA_FILE

TOP = {
    "sentence_encoder.embed_tokens.weight": "roberta.embeddings.word_embeddings.weight",
    "sentence_encoder.embed_positions.weight": "roberta.embeddings.position_embeddings.weight",
    "sentence_encoder.layernorm_embedding.weight": "roberta.embeddings.LayerNorm.weight",
    "sentence_encoder.layernorm_embedding.bias": "roberta.embeddings.LayerNorm.bias",
    "sentence_encoder.emb_layer_norm.weight": "roberta.embeddings.LayerNorm.weight",  # older fairseq
    "sentence_encoder.emb_layer_norm.bias": "roberta.embeddings.LayerNorm.bias",
    "lm_head.dense.weight": "lm_head.dense.weight",
    "lm_head.dense.bias": "lm_head.dense.bias",
    "lm_head.layer_norm.weight": "lm_head.layer_norm.weight",
    "lm_head.layer_norm.bias": "lm_head.layer_norm.bias",
    "lm_head.weight": "lm_head.decoder.weight",
    "lm_head.bias": "lm_head.bias",
}
LAYER = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.output.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "final_layer_norm": "output.LayerNorm",
}
LAYER_KEY = re.compile(r"sentence_encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
BOOKKEEPING = re.compile(r"(^|\.)(version|_float_tensor)$")  # fairseq buffers with no weights in them
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def _load(path: Path, allow_pickle: bool) -> dict:
    import torch

    if not path.is_file():
        raise XlpError(f"{path}: no such file (a fairseq checkpoint folder holds model.pt)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if allow_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        what = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        raise XlpError(f"{path}: holds Python objects besides tensors ({what.group(1) if what else 'see --debug'}), "
                       f"which can run code when unpickled; pass --allow-pickle only if you trust its source") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise XlpError(f"{path}: not a readable PyTorch checkpoint: {str(e).splitlines()[0]}") from None


def _arg(ckpt: dict, name: str):
    """A training argument from `args` (argparse) or `cfg.model` (hydra), if the checkpoint has one."""
    cfg = ckpt.get("cfg")
    for holder in (ckpt.get("args"), (cfg or {}).get("model") if isinstance(cfg, dict) else None):
        if holder is None:
            continue
        value = holder.get(name) if isinstance(holder, dict) else getattr(holder, name, None)
        if value is not None:
            return value
    return None


def map_state_dict(state: dict) -> dict:
    """fairseq key -> Hugging Face key for every tensor; any key it cannot map is an error."""
    prefixes = {k.split(".", 1)[0] for k in state}
    if len(prefixes) != 1 or not prefixes <= {"encoder", "decoder"}:
        raise XlpError(f"model.pt: expected keys under encoder. or decoder., found prefixes {sorted(prefixes)}")
    out = {}
    for key, tensor in state.items():
        rest = key.split(".", 1)[1]
        if BOOKKEEPING.search(rest):
            continue
        if rest in TOP:
            out[TOP[rest]] = tensor
            continue
        m = LAYER_KEY.fullmatch(rest)
        if m and m.group(2) in LAYER:
            out[f"roberta.encoder.layer.{m.group(1)}.{LAYER[m.group(2)]}.{m.group(3)}"] = tensor
            continue
        raise XlpError(f"model.pt: cannot map key {key!r} to XLMRobertaForMaskedLM "
                       f"(a pre-layer-norm or fine-tuned model?); nothing was written")
    return out


def read_dict(path: Path) -> list[str]:
    if not path.is_file():
        raise XlpError(f"{path}: missing (fairseq's dictionary, one `piece count` per line)")
    pieces = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.rstrip("\n").split(" ")
        if len(parts) < 2:
            raise XlpError(f"{path}:{n}: expected `piece count`, got {line!r}")
        pieces.append(parts[0])
    return pieces


def build_tokenizer(src: Path, pieces: list[str], vocab: int):
    from transformers import XLMRobertaTokenizer

    spm = src / "sentencepiece.bpe.model"
    if not spm.is_file():
        raise XlpError(f"{spm}: missing (the sentencepiece model the checkpoint was trained with)")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(spm, Path(tmp) / "sentencepiece.bpe.model")
        try:
            tok = XLMRobertaTokenizer.from_pretrained(tmp)
        except Exception as e:  # noqa: BLE001 - any parse failure of a foreign file is bad input
            raise XlpError(f"{spm}: cannot read as a sentencepiece model: {e}") from None
    if len(tok) != vocab:
        raise XlpError(f"{spm}: gives {len(tok)} token ids, the embeddings have {vocab} rows")
    ids = tok.convert_tokens_to_ids(pieces)
    for n, (piece, i) in enumerate(zip(pieces, ids), 1):
        if i != n + len(SPECIALS) - 1:
            raise XlpError(f"{src / 'dict.txt'}:{n}: piece {piece!r} is fairseq id {n + 3} but "
                           f"sentencepiece id {i}; the dictionary does not match the sentencepiece model")
    return tok


def convert_fairseq(src: Path, dst: Path, heads: int | None = None, step: int | None = None,
                    allow_pickle: bool = False) -> Path:
    """Write `dst` (config, model.safetensors, tokenizer, step metadata) from a fairseq folder `src`."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    src, dst = Path(src), Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise XlpError(f"{dst}: exists and is not empty; choose a new folder")
    ckpt = _load(src / "model.pt", allow_pickle)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise XlpError(f"{src / 'model.pt'}: no `model` state dict inside (not a fairseq checkpoint)")
    weights = map_state_dict(ckpt["model"])
    emb = weights.get("roberta.embeddings.word_embeddings.weight")
    if emb is None:
        raise XlpError(f"{src / 'model.pt'}: no sentence_encoder.embed_tokens.weight")
    vocab, hidden = emb.shape
    pieces = read_dict(src / "dict.txt")
    if len(pieces) + len(SPECIALS) + 1 != vocab:
        raise XlpError(f"{src / 'dict.txt'}: {len(pieces)} pieces + 4 specials + <mask> = "
                       f"{len(pieces) + 5}, but the embeddings have {vocab} rows")
    heads = heads or _arg(ckpt, "encoder_attention_heads") or (hidden // 64 if hidden % 64 == 0 else None)
    if not heads or hidden % heads:
        raise XlpError(f"{src / 'model.pt'}: cannot tell the number of attention heads; pass --heads")
    layers = {int(k.split(".")[3]) for k in weights if k.startswith("roberta.encoder.layer.")}
    tied = torch.equal(weights.get("lm_head.decoder.weight", emb), emb)
    config = XLMRobertaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=len(layers), num_attention_heads=heads,
        intermediate_size=weights["roberta.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=weights["roberta.embeddings.position_embeddings.weight"].shape[0],
        hidden_act=_arg(ckpt, "activation_fn") or "gelu", type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, tie_word_embeddings=tied)
    model = XLMRobertaForMaskedLM(config).eval()
    expected = model.state_dict()
    weights.setdefault("roberta.embeddings.token_type_embeddings.weight", torch.zeros(1, hidden))
    for key, tensor in weights.items():
        if key not in expected:
            raise XlpError(f"model.pt: {key} has no place in a {len(layers)}-layer XLMRobertaForMaskedLM")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise XlpError(f"model.pt: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}")
    missing = [k for k in expected if k not in weights and not k.endswith("position_ids")
               and k != "lm_head.decoder.bias" and not (tied and k == "lm_head.decoder.weight")]
    if missing:
        raise XlpError(f"model.pt: no weights for {', '.join(missing[:5])}")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    if tied:
        model.tie_weights()
    tok = build_tokenizer(src, pieces, vocab)
    if step is None:
        history = ckpt.get("optimizer_history") or [{}]
        step = history[-1].get("num_updates")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if step is not None:
            (tmp / METADATA_FILE).write_text(json.dumps({"step": int(step), "converted_from": str(src.resolve())}))
        if dst.exists():
            dst.rmdir()
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst

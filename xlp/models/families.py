"""What kind of model a checkpoint is (causal or masked LM), its default pooling, its special tokens,
and how to drop its layers above the highest one requested, for every Hugging Face family."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

# model types whose attention is causal even when the config was saved from the bare base model
CAUSAL_TYPES = frozenset({
    "gpt2", "gpt_neox", "gpt_neo", "gptj", "bloom", "llama", "olmo", "olmo2", "olmo3", "olmoe", "mistral", "mixtral",
    "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "falcon", "opt",
    "stablelm", "starcoder2", "smollm3", "codegen", "xglm", "mpt", "persimmon", "cohere", "granite",
    "modernbert-decoder",
})
CAUSAL_ARCH_SUFFIXES = ("ForCausalLM", "LMHeadModel")
# weight names of a masked-LM head (BERT, RoBERTa/XLM-R, ELECTRA's generator, XLM): only read when a config
# does not name its architecture
MASKED_HEAD_PREFIXES = ("cls.predictions.", "lm_head.", "generator_lm_head.", "pred_layer.")
LAYER_STACKS = ("encoder.layer", "layers", "h", "decoder.layers", "transformer.h")
FINAL_NORMS = ("final_layer_norm", "norm", "ln_f", "final_norm", "decoder.final_layer_norm")

Kind = Literal["masked", "causal"]


def is_causal(config) -> bool:
    """Whether the model attends only to the left (a decoder-only LM), from its config."""
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForMaskedLM") for a in archs):
        return False
    return (bool(getattr(config, "is_decoder", False)) or any(a.endswith(CAUSAL_ARCH_SUFFIXES) for a in archs)
            or getattr(config, "model_type", None) in CAUSAL_TYPES)


def model_kind(config, directory: str | Path | None = None) -> Kind | None:
    """Which language-model head the checkpoint carries: "masked", "causal" or None (a bare encoder or
    base model, which has no bits per character). Read from the architecture its publisher saved
    (`*ForMaskedLM`, `*ForCausalLM`, `*LMHeadModel`); only a config without one falls back to the
    names of a local checkpoint's weights."""
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "masked"
    if any(a.endswith(CAUSAL_ARCH_SUFFIXES) for a in archs):
        return "causal"
    if archs or directory is None:
        return None
    from safetensors import safe_open

    for f in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            if any(k.startswith(MASKED_HEAD_PREFIXES) or ".lm_head." in k for k in st.keys()):  # noqa: SIM118 - safe_open is not iterable
                return "causal" if is_causal(config) else "masked"
    return None


def resolve_pooling(pooling: str, config) -> str:
    """`auto`: a word's last subword in a causal LM (only it has seen the whole word), its first in an encoder."""
    if pooling != "auto":
        return pooling
    return "last" if is_causal(config) else "first"


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text's own tokens (BOS, CLS/SEP, <s>/</s>, or none)."""
    enc = tokenizer("x y", return_special_tokens_mask=True)
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    content = [i for i, s in enumerate(special) if not s]
    if not content:
        return ids, []
    return ids[: content[0]], ids[content[-1] + 1:]


def _get(module, path: str):
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _set(module, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        module = getattr(module, part)
    setattr(module, last, value)


def layer_stack(model) -> str | None:
    """The dotted name of the model's list of transformer layers (one per hidden state after the first)."""
    import torch  # here, not at the top: pre-flight resolves poolings without loading torch

    depth = model.config.num_hidden_layers
    for path in LAYER_STACKS:
        stack = _get(model, path)
        if isinstance(stack, torch.nn.ModuleList) and len(stack) == depth:
            return path
    return None


def truncate_layers(model, n_layers: int, probe_ids: list[int]) -> bool:
    """Drop the layers above `n_layers` so that they are never computed, keeping hidden_states[0..n_layers]
    equal to the full model's. Decoders (and ModernBERT) apply a final norm to the last hidden state
    only, so it becomes an identity: hidden state n_layers is then the raw output of layer n_layers, as
    in the full model. Checked on `probe_ids` against the full forward; a family where they differ
    keeps all its layers. True when the model was truncated."""
    import torch

    path = layer_stack(model)
    depth = model.config.num_hidden_layers
    if path is None or n_layers >= depth:
        return False
    stack, parent = _get(model, path), path.rpartition(".")[0]
    norm_path = next((f"{parent}.{n}" if parent else n for n in FINAL_NORMS
                      if isinstance(_get(model, f"{parent}.{n}" if parent else n), torch.nn.Module)), None)
    norm = _get(model, norm_path) if norm_path else None
    device = next(model.parameters()).device
    ids = torch.tensor([probe_ids], device=device)

    def hidden():
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states

    full = hidden()[: n_layers + 1]
    _set(model, path, torch.nn.ModuleList(list(stack)[:n_layers]))
    if norm is not None:
        _set(model, norm_path, torch.nn.Identity())
    model.config.num_hidden_layers = n_layers
    cut = hidden()
    if len(cut) == n_layers + 1 and all(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)
                                        for a, b in zip(full, cut)):
        return True
    _set(model, path, stack)
    if norm is not None:
        _set(model, norm_path, norm)
    model.config.num_hidden_layers = depth
    return False

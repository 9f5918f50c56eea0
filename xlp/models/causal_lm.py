"""Bits per UTF-8 byte and per character of a text under a causal LM: its exact token log-likelihood.

Conventions (the report states them; these numbers are not comparable with a masked LM's estimate):
- The text is tokenized as running text, without special tokens. Its tokens are scored after a
  context token: the one the tokenizer itself puts first (Llama's BOS), else the tokenizer's BOS
  token, else its EOS token (GPT-2, Pythia and OLMo separate documents with <|endoftext|>: this is
  the rolling log-likelihood of lm-evaluation-harness). A tokenizer with none of them: the first
  token has no context, is not scored, and the bytes and characters it covers are not counted.
- Texts longer than the window W are scored with a sliding window of stride S (default W // 2): the
  first window scores its tokens with all the context before them, each later window moves by S and
  scores only its last S tokens, so every token is scored exactly once, with at least W - S tokens of
  context (the longest that fits when S = 1).
- bits = sum over scored tokens of -log2 p(token | context); bytes and characters are those of the
  text the scored tokens cover (from the first scored token to the end of the last token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xlp.errors import XlpError
from xlp.models.checkpoints import Checkpoint
from xlp.models.families import special_tokens
from xlp.models.loading import TokenBatches, autocast, load_fast_tokenizer, load_model, pick_device, resolve_precision

# families whose logits are exactly the output embedding applied to the base model's last hidden
# state, so only the scored positions are projected onto the vocabulary (others: the full logits)
HEAD_IS_PROJECTION = frozenset({"gpt2", "gpt_neox", "bloom", "llama", "olmo", "olmo2", "mistral", "qwen2", "qwen3"})
DEFAULT_WINDOW = 2048


@dataclass
class TextBits:
    """Per text: bits of its scored tokens, and the UTF-8 bytes, characters and tokens they cover."""
    bits: np.ndarray
    bytes: np.ndarray
    chars: np.ndarray
    tokens: np.ndarray

    def bits_per_byte(self) -> float:
        return float(self.bits.sum() / max(self.bytes.sum(), 1))

    def bits_per_char(self) -> float:
        return float(self.bits.sum() / max(self.chars.sum(), 1))


def context_ids(tokenizer) -> list[int]:
    """The token every text is scored after (see the module's conventions); [] when there is none."""
    prefix, _ = special_tokens(tokenizer)
    if prefix:
        return prefix
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return [tid]
    return []


def sliding_windows(n: int, window: int, stride: int, first: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored position) of each window over a sequence of n positions of which
    positions >= `first` are scored; every scored position lies in exactly one window's scored part."""
    if n <= first:
        return []
    out = [(0, min(window, n), first)]
    end = out[0][1]
    while end < n:
        new_end = min(end + stride, n)
        out.append((max(0, new_end - window), new_end, end))
        end = new_end
    return out


class CausalLmScorer:
    """Holds one causal LM with its head; scores texts' exact log-likelihood."""

    def __init__(self, ckpt: Checkpoint, batch_tokens: int | None = None, device: str | None = None,
                 trust_remote_code: bool = False, allow_pickle: bool = False, window: int | None = None,
                 stride: int | None = None, precision: str = "auto"):
        from transformers import AutoModelForCausalLM

        self.ckpt = ckpt
        self.device = pick_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = load_model(ckpt, AutoModelForCausalLM, trust_remote_code, allow_pickle,
                                "load its causal-LM head").eval().to(self.device)
        self.tokenizer = load_fast_tokenizer(ckpt, trust_remote_code)
        limit = min(getattr(self.model.config, "max_position_embeddings", None) or DEFAULT_WINDOW,
                    self.tokenizer.model_max_length, DEFAULT_WINDOW)
        self.window = min(window or limit, limit)
        self.stride = stride or max(1, self.window // 2)
        if not 1 <= self.stride < self.window:
            raise XlpError(f"causal LM scoring: stride {self.stride} must be at least 1 and below the window "
                           f"({self.window} tokens)")
        self.context = context_ids(self.tokenizer)
        self.batches = TokenBatches(ckpt, self.device, batch_tokens)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.project = self.model.config.model_type in HEAD_IS_PROJECTION

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def bits(self, texts: Sequence[str]) -> TextBits:
        n = len(texts)
        out = TextBits(np.zeros(n), *(np.zeros(n, dtype=np.int64) for _ in range(3)))
        if not n:
            return out
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        c = len(self.context)
        jobs = []  # (window ids, text index, first scored index within the window)
        for i, (text, ids, offsets) in enumerate(zip(texts, enc["input_ids"], enc["offset_mapping"])):
            seq = self.context + list(ids)
            first = max(c, 1)
            for start, end, score_from in sliding_windows(len(seq), self.window, self.stride, first):
                jobs.append((seq[start:end], i, score_from - start))
            scored = len(seq) - first
            if scored > 0:
                begin = 0 if c else offsets[1][0]  # without a context token, token 0 is not scored
                covered = text[begin: max(e for _, e in offsets)]
                out.tokens[i], out.chars[i], out.bytes[i] = scored, len(covered), len(covered.encode("utf-8"))
        jobs.sort(key=lambda job: len(job[0]))
        self.batches.run(jobs, lambda batch: self._score(batch, out.bits))
        return out

    @torch.inference_mode()
    def _score(self, batch: list, bits: np.ndarray) -> None:
        T = max(len(ids) for ids, _, _ in batch)
        self.batches.check_memory(T * len(batch))
        input_ids = torch.full((len(batch), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        rows, cols, owners = [], [], []
        for b, (ids, i, q0) in enumerate(batch):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            mask[b, : len(ids)] = 1
            rows.extend([b] * (len(ids) - q0))
            cols.extend(range(q0, len(ids)))
            owners.extend([i] * (len(ids) - q0))
        r, q = torch.tensor(rows), torch.tensor(cols)
        targets = input_ids[r, q].to(self.device)
        r, q = r.to(self.device), q.to(self.device)
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        with autocast(self.device, self.precision):
            if self.project:  # the vocabulary projection on the scored positions only
                hidden = self.model.base_model(**inputs).last_hidden_state[r, q - 1]
                logits = self.model.get_output_embeddings()(hidden).float()
            else:
                logits = self.model(**inputs).logits[r, q - 1].float()
        nll = -torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0] / math.log(2)
        np.add.at(bits, np.asarray(owners), nll.double().cpu().numpy())

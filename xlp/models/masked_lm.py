"""A masked LM's pseudo-log-likelihood bits: in PASSES masking passes, pass j masks the tokens whose index is
j mod PASSES (about 1 in 7, close to the 15 % masking of pretraining), so every token is predicted exactly
once from a context with the other passes' tokens visible."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from xlp.errors import XlpError
from xlp.models.checkpoints import Checkpoint
from xlp.models.loading import TokenBatches, autocast, load_fast_tokenizer, load_model, pick_device, resolve_precision

PASSES = 7


class MlmScorer:
    def __init__(self, ckpt: Checkpoint, batch_tokens: int | None = None, device: str | None = None,
                 trust_remote_code: bool = False, allow_pickle: bool = False, precision: str = "auto"):
        from transformers import AutoModelForMaskedLM

        self.device = pick_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = load_model(ckpt, AutoModelForMaskedLM, trust_remote_code, allow_pickle,
                                "load its masked-LM head").eval().to(self.device)
        self.tokenizer = load_fast_tokenizer(ckpt, trust_remote_code)
        if self.tokenizer.mask_token_id is None:
            raise XlpError(f"checkpoint {ckpt.name}: its tokenizer has no mask token, so no MLM bits per character")
        self.batches = TokenBatches(ckpt, self.device, batch_tokens)
        self.head = getattr(self.model, "lm_head", None) or getattr(self.model, "cls", None)
        limit = getattr(self.model.config, "max_position_embeddings", 512) - 2
        self.max_len = max(8, min(self.tokenizer.model_max_length, limit, 512))

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @torch.inference_mode()
    def bits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per text: bits of its tokens, the characters they cover, and how many tokens were scored."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_len, return_offsets_mapping=True,
                             return_special_tokens_mask=True)
        jobs = []  # (ids, text index, positions to mask)
        chars = np.zeros(len(texts))
        counts = np.zeros(len(texts), dtype=int)
        for i, (ids, special, offsets) in enumerate(zip(enc["input_ids"], enc["special_tokens_mask"],
                                                         enc["offset_mapping"])):
            content = [p for p, s in enumerate(special) if not s]
            counts[i] = len(content)
            chars[i] = max((offsets[p][1] for p in content), default=0)  # the text up to the last kept token
            for j in range(PASSES):
                masked = content[j::PASSES]
                if masked:
                    jobs.append((ids, i, masked))
        bits = np.zeros(len(texts))
        jobs.sort(key=lambda job: len(job[0]))
        self.batches.run(jobs, lambda batch: self._score_batch(batch, bits))
        return bits, chars, counts

    @torch.inference_mode()
    def _score_batch(self, batch: list, bits: np.ndarray) -> None:
        """Add the bits of each job's masked tokens to its text's total."""
        T = max(len(ids) for ids, _, _ in batch)
        self.batches.check_memory(T * len(batch))
        input_ids = torch.full((len(batch), T), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        attn = torch.zeros((len(batch), T), dtype=torch.long)
        rows, cols, owner = [], [], []
        for b, (ids, i, masked) in enumerate(batch):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attn[b, : len(ids)] = 1
            for p in masked:
                rows.append(b)
                cols.append(p)
                owner.append(i)
        true = input_ids[rows, cols].clone()
        input_ids[rows, cols] = self.tokenizer.mask_token_id
        r, c = torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)
        with autocast(self.device, self.precision):
            inputs = dict(input_ids=input_ids.to(self.device), attention_mask=attn.to(self.device))
            if self.head is not None:  # the vocabulary projection on masked rows only
                logits = self.head(self.model.base_model(**inputs).last_hidden_state[r, c]).float()
            else:
                logits = self.model(**inputs).logits[r, c].float()
        nll = -torch.log_softmax(logits, -1)[torch.arange(len(rows)), true.to(self.device)] / math.log(2)
        np.add.at(bits, np.asarray(owner), nll.cpu().numpy())

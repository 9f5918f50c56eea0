"""MLM bits per character: how well the checkpoint's masked-LM head predicts each language's test
text, normalised by characters so that languages and tokenizers compare.

One score per token, in PASSES masking passes: pass j masks the tokens whose index is j mod PASSES
(about 1 in 7, close to the 15 % masking of pretraining), so every token is predicted exactly once
from a context with the other passes' tokens visible. bits = sum of -log2 p(token); bpc = bits /
characters of the text the tokens cover.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from xlp.errors import XlpError
from xlp.models.checkpoints import Checkpoint, load_tokenizer

NAME = "bpc"
METRIC = "bpc"
PASSES = 7
HEAD_PREFIXES = ("lm_head.", "cls.predictions.", "generator_lm_head.", "pred_layer.")


def has_mlm_head(directory: Path) -> bool:
    """Whether a local checkpoint's weights hold a masked-LM head (read from the safetensors index only)."""
    from safetensors import safe_open

    files = sorted(Path(directory).glob("*.safetensors"))
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            if any(k.startswith(HEAD_PREFIXES) or ".lm_head." in k for k in st.keys()):
                return True
    return False


class MlmScorer:
    def __init__(self, ckpt: Checkpoint, batch_tokens: int | None, device: str | None = None,
                 trust_remote_code: bool = False):
        from transformers import AutoModelForMaskedLM

        from xlp.models import quiet_transformers
        from xlp.models.extract import default_batch_tokens

        quiet_transformers()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.tokenizer = load_tokenizer(ckpt, use_fast=True, trust_remote_code=trust_remote_code)
            self.model = AutoModelForMaskedLM.from_pretrained(ckpt.location, trust_remote_code=trust_remote_code,
                                                              **ckpt.hub_kwargs()).eval().to(self.device)
        except (OSError, ValueError, RuntimeError) as e:
            raise XlpError(f"checkpoint {ckpt.name}: cannot load its masked-LM head: {str(e).splitlines()[0]}") from None
        if self.tokenizer.mask_token_id is None:
            raise XlpError(f"checkpoint {ckpt.name}: its tokenizer has no mask token, so no MLM bits per character")
        self.batch_tokens = batch_tokens or default_batch_tokens(self.device)
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
        jobs = []  # (text index, pass, ids, positions to mask)
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
                    jobs.append((i, ids, masked))
        bits = np.zeros(len(texts))
        jobs.sort(key=lambda job: len(job[1]))
        start = 0
        while start < len(jobs):
            end = start + 1
            while end < len(jobs) and len(jobs[end][1]) * (end - start + 1) <= self.batch_tokens:
                end += 1
            batch = jobs[start:end]
            T = max(len(ids) for _, ids, _ in batch)
            input_ids = torch.full((len(batch), T), self.tokenizer.pad_token_id or 0, dtype=torch.long)
            attn = torch.zeros((len(batch), T), dtype=torch.long)
            rows, cols, owner = [], [], []
            for b, (i, ids, masked) in enumerate(batch):
                input_ids[b, : len(ids)] = torch.tensor(ids)
                attn[b, : len(ids)] = 1
                for p in masked:
                    rows.append(b)
                    cols.append(p)
                    owner.append(i)
            true = input_ids[rows, cols].clone()
            input_ids[rows, cols] = self.tokenizer.mask_token_id
            r, c = torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                inputs = dict(input_ids=input_ids.to(self.device), attention_mask=attn.to(self.device))
                if self.head is not None:  # the vocabulary projection on masked rows only
                    logits = self.head(self.model.base_model(**inputs).last_hidden_state[r, c]).float()
                else:
                    logits = self.model(**inputs).logits[r, c].float()
            nll = -torch.log_softmax(logits, -1)[torch.arange(len(rows)), true.to(self.device)] / math.log(2)
            np.add.at(bits, np.asarray(owner), nll.cpu().numpy())
            start = end
        return bits, chars, counts

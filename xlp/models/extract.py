"""Sentences of words -> word vectors for chosen layers, with subword pooling done on the device.

Fast path: one batch tokenisation for all sentences, length-bucketed batches under a token budget,
no layer above the highest requested is computed (BERT-family encoders), inference mode,
gather/scatter pooling on the device, and one float16 copy per batch to the host.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from xlp.errors import XlpError
from xlp.models.checkpoints import Checkpoint, load_tokenizer
from xlp.models.loading import TokenBatches, load_model, pick_device


def _truncate_encoder(model, n_layers: int) -> None:
    """Drop encoder layers above `n_layers` where hidden_states[i] is exactly layer i's output."""
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if isinstance(layers, torch.nn.ModuleList) and n_layers < len(layers):
        encoder.layer = torch.nn.ModuleList(list(layers)[:n_layers])
        model.config.num_hidden_layers = n_layers


class FeatureExtractor:
    """Holds one loaded checkpoint; turns word-split sentences into per-layer word vectors
    (`extract`) and texts into per-layer mean subword vectors (`sentence_means`)."""

    def __init__(self, ckpt: Checkpoint, layers: Sequence[int] | str = "all", pooling: str = "first",
                 batch_tokens: int | None = None, device: str | None = None, trust_remote_code: bool = False,
                 allow_pickle: bool = False):
        from transformers import AutoModel

        self.ckpt = ckpt
        self.pooling = pooling
        self.device = pick_device(device)
        model = load_model(ckpt, AutoModel, trust_remote_code, allow_pickle)
        try:
            self.tokenizer = load_tokenizer(ckpt, use_fast=True, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, RuntimeError) as e:
            raise XlpError(f"checkpoint {ckpt.name}: cannot load its tokenizer: {str(e).splitlines()[0]}") from None
        if not self.tokenizer.is_fast:
            raise XlpError(f"checkpoint {ckpt.name}: needs a fast tokenizer (tokenizer.json) for word alignment")
        depth = model.config.num_hidden_layers
        self.layers = list(range(depth + 1)) if layers == "all" else list(layers)
        if max(self.layers) > depth:
            raise XlpError(f"layers: {max(self.layers)} requested but {ckpt.name} has {depth} layers")
        _truncate_encoder(model, max(self.layers))
        self.model = model.eval().to(self.device)
        probe = self.tokenizer(["x"], is_split_into_words=True)
        wids = probe.word_ids()
        first = next(i for i, w in enumerate(wids) if w is not None)
        last = max(i for i, w in enumerate(wids) if w is not None)
        self.prefix, self.suffix = probe["input_ids"][:first], probe["input_ids"][last + 1:]
        limit = min(self.tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512) - 2)
        self.max_len = max(8, min(limit, 512))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.batches = TokenBatches(ckpt, self.device, batch_tokens, len(self.prefix) + len(self.suffix))

    @property
    def batch_tokens(self) -> int:
        return self.batches.batch_tokens

    @property
    def oom_retries(self) -> int:
        return self.batches.oom_retries

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def _chunks(self, sentences: Sequence[Sequence[str]]):
        """Per chunk: (token ids, word index of each token, global word offset). Long sentences split by words."""
        enc = self.tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False)
        room = self.max_len - len(self.prefix) - len(self.suffix)
        offset = 0
        for i, words in enumerate(sentences):
            ids, wids = enc["input_ids"][i], enc.word_ids(i)
            start = 0
            while start < len(ids):
                end = min(start + room, len(ids))
                # never cut inside a word unless the word alone exceeds the window
                while end < len(ids) and end > start and wids[end] == wids[end - 1]:
                    end -= 1
                if end == start:
                    end = min(start + room, len(ids))
                yield ids[start:end], wids[start:end], offset
                start = end
                while start < len(ids) and wids[start] == wids[start - 1]:
                    start += 1  # remainder of a word cut at the window edge
            offset += len(words)

    def extract(self, sentences: Sequence[Sequence[str]], dtype: str = "float16") -> dict[int, np.ndarray]:
        """Per requested layer, an (n_words, d) array of `dtype` in sentence and word order."""
        n_words = sum(len(s) for s in sentences)
        out = {layer: np.zeros((n_words, self.hidden_size), dtype=dtype) for layer in self.layers}
        p = len(self.prefix)
        self.batches.run(sorted(self._chunks(sentences), key=lambda c: len(c[0])), lambda b: self._run_batch(b, out, p))
        return out

    def sentence_means(self, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Per requested layer, (n, d) float32: each text's mean subword vector (special tokens left
        out). A text longer than the model's window is cut into windows and its mean is over all of
        its tokens, so a long paragraph's tail counts; length-bucketed batches as for words."""
        room = self.max_len - len(self.prefix) - len(self.suffix)
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        pieces = sorted(((seq[k: k + room], i) for i, seq in enumerate(ids) for k in range(0, max(len(seq), 1), room)),
                        key=lambda piece: len(piece[0]))
        sums = {layer: np.zeros((len(texts), self.hidden_size), dtype=np.float64) for layer in self.layers}
        counts = np.zeros(len(texts))
        self.batches.run(pieces, lambda b: self._sentence_batch(b, sums, counts))
        return {layer: (s / np.maximum(counts, 1)[:, None]).astype(np.float32) for layer, s in sums.items()}

    @torch.inference_mode()
    def _sentence_batch(self, batch, sums: dict[int, np.ndarray], counts: np.ndarray) -> None:
        """Add each piece's subword vectors (and how many) to its text's sums."""
        T = max(len(piece) for piece, _ in batch) + len(self.prefix) + len(self.suffix)
        self.batches.check_memory(T * len(batch))
        p = len(self.prefix)
        input_ids = torch.full((len(batch), T), self.pad_id, dtype=torch.long)
        content = torch.zeros((len(batch), T), dtype=torch.float)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        for b, (piece, _) in enumerate(batch):
            row = self.prefix + piece + self.suffix
            input_ids[b, : len(row)] = torch.tensor(row)
            mask[b, : len(row)] = 1
            content[b, p: p + len(piece)] = 1
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            hidden = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                output_hidden_states=True).hidden_states
        w = content.to(self.device)
        owners = np.array([i for _, i in batch])
        np.add.at(counts, owners, [len(piece) for piece, _ in batch])
        for layer in self.layers:
            np.add.at(sums[layer], owners, (hidden[layer].float() * w[..., None]).sum(1).cpu().numpy())

    @torch.inference_mode()
    def _run_batch(self, batch, out: dict[int, np.ndarray], p: int) -> None:
        T = max(len(ids) for ids, _, _ in batch) + p + len(self.suffix)
        self.batches.check_memory(T * len(batch))
        input_ids = torch.full((len(batch), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        tok_pos, tok_word, word_rows = [], [], []
        for b, (ids, wids, offset) in enumerate(batch):
            row = self.prefix + ids + self.suffix
            input_ids[b, : len(row)] = torch.tensor(row)
            mask[b, : len(row)] = 1
            first_word = wids[0]
            tok_pos.append(b * T + p + np.arange(len(ids)))
            tok_word.append(np.asarray(wids) - first_word + len(word_rows))
            word_rows.extend(offset + w for w in range(first_word, wids[-1] + 1))
        pos = torch.from_numpy(np.concatenate(tok_pos)).to(self.device)
        seg = torch.from_numpy(np.concatenate(tok_word)).to(self.device)
        n = len(word_rows)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            hidden = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                output_hidden_states=True).hidden_states
        counts = torch.zeros(n, device=self.device).index_add_(0, seg, torch.ones_like(seg, dtype=torch.float))
        if self.pooling == "first":
            pick = torch.full((n,), input_ids.numel(), device=self.device).scatter_reduce(0, seg, pos, "amin")
        else:
            pick = torch.full((n,), -1, device=self.device).scatter_reduce(0, seg, pos, "amax")
        pick = pick.clamp(0, input_ids.numel() - 1)  # a word with no subword gets a zero vector below
        rows = np.asarray(word_rows)
        for layer in self.layers:
            h = hidden[layer].reshape(-1, hidden[layer].shape[-1]).float()
            if self.pooling == "mean":
                v = torch.zeros(n, h.shape[1], device=self.device).index_add_(0, seg, h[pos]) / counts.clamp_min(1)[:, None]
            else:
                v = h[pick] * (counts > 0)[:, None]
            out[layer][rows] = v.to(getattr(torch, out[layer].dtype.name)).cpu().numpy()

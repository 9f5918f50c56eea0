"""Sentences of words -> word vectors for chosen layers, with subword pooling done on the device.

Fast path: one batch tokenisation of the running text of all sentences (xlp/models/words.py maps
tokens to words), length-bucketed batches under a token budget, no layer above the highest requested
is computed (encoders and decoders alike: xlp/models/families.py), inference mode, gather/scatter
pooling on the device, and one copy per batch to the host (float16 unless asked otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from xlp.errors import XlpError
from xlp.models.checkpoints import Checkpoint
from xlp.models.families import resolve_pooling, special_tokens, truncate_layers
from xlp.models.loading import TokenBatches, autocast, load_fast_tokenizer, load_model, pick_device, resolve_precision
from xlp.models.words import NO_SUBWORD, align, pairs, unknown_token, windows

POOLINGS = ("auto", "first", "mean", "last")


class FeatureExtractor:
    """Holds one loaded checkpoint; turns word-split sentences into per-layer word vectors
    (`extract`) and texts into per-layer mean subword vectors (`sentence_means`)."""

    def __init__(self, ckpt: Checkpoint, layers: Sequence[int] | str = "all", pooling: str = "auto",
                 batch_tokens: int | None = None, device: str | None = None, trust_remote_code: bool = False,
                 allow_pickle: bool = False, precision: str = "auto"):
        from transformers import AutoModel

        if pooling not in POOLINGS:
            raise XlpError(f"pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")
        self.ckpt = ckpt
        self.device = pick_device(device)
        self.precision = resolve_precision(precision, self.device)  # float32 or bfloat16: the run records it
        model = load_model(ckpt, AutoModel, trust_remote_code, allow_pickle)
        self.tokenizer = load_fast_tokenizer(ckpt, trust_remote_code)
        depth = model.config.num_hidden_layers
        self.layers = list(range(depth + 1)) if layers == "all" else list(layers)
        if max(self.layers) > depth:
            raise XlpError(f"layers: {max(self.layers)} requested but {ckpt.name} has {depth} layers")
        # what was asked (`auto` included) and what is used: the run records the latter
        self.requested_pooling, self.pooling = pooling, resolve_pooling(pooling, model.config)
        self.model = model.eval().to(self.device)
        self.prefix, self.suffix = special_tokens(self.tokenizer)
        self.truncated = truncate_layers(self.model, max(self.layers),
                                         self.prefix + self.tokenizer("a b", add_special_tokens=False)["input_ids"]
                                         + self.suffix)
        limit = min(self.tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512) - 2)
        self.max_len = max(8, min(limit, 512))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.unknown = unknown_token(self.tokenizer)  # what a word or text with no subword is read as
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
        """Per window: (token ids, token index and word index of each token-word pair, first and last
        word, global word offset of the sentence). Long sentences are split between words."""
        room = self.max_len - len(self.prefix) - len(self.suffix)
        offset = 0
        for words, sent in zip(sentences, align(self.tokenizer, sentences) if sentences else []):
            if sent.unk:
                NO_SUBWORD["words", self.unknown[1]] += sent.unk
            for start, end in windows(sent, room):
                tok, word = pairs(sent, start, end)
                yield sent.ids[start:end], tok, word, int(sent.lo[start]), int(sent.hi[end - 1]), offset
            offset += len(words)

    def input_ids(self, words: Sequence[str]) -> list[list[int]]:
        """The rows of token ids fed to the model for one sentence (one per window), special tokens included."""
        return [self.prefix + chunk[0] + self.suffix for chunk in self._chunks([words])]

    def extract(self, sentences: Sequence[Sequence[str]], dtype: str = "float16",
                before_batch: Callable[[], None] | None = None) -> dict[int, np.ndarray]:
        """Per requested layer, an (n_words, d) array of `dtype` in sentence and word order. `before_batch` is
        called before each batch (an actor sets its threads there)."""
        n_words = sum(len(s) for s in sentences)
        out = {layer: np.zeros((n_words, self.hidden_size), dtype=dtype) for layer in self.layers}
        p = len(self.prefix)

        def step(batch: list) -> None:
            if before_batch is not None:
                before_batch()
            self._run_batch(batch, out, p)

        self.batches.run(sorted(self._chunks(sentences), key=lambda c: len(c[0])), step)
        return out

    def sentence_means(self, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Per requested layer, (n, d) float32: each text's mean subword vector (special tokens left
        out). A text longer than the model's window is cut into windows and its mean is over all of
        its tokens, so a long paragraph's tail counts; length-bucketed batches as for words."""
        room = self.max_len - len(self.prefix) - len(self.suffix)
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        for i in (i for i, seq in enumerate(ids) if not seq):  # a text with no subword is read as the unknown token
            ids[i] = [self.unknown[0]]
            NO_SUBWORD["texts", self.unknown[1]] += 1
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
        with autocast(self.device, self.precision):
            hidden = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                output_hidden_states=True).hidden_states
        w = content.to(self.device)
        owners = np.array([i for _, i in batch])
        np.add.at(counts, owners, [len(piece) for piece, _ in batch])
        for layer in self.layers:
            np.add.at(sums[layer], owners, (hidden[layer].float() * w[..., None]).sum(1).cpu().numpy())

    @torch.inference_mode()
    def _run_batch(self, batch, out: dict[int, np.ndarray], p: int) -> None:
        T = max(len(item[0]) for item in batch) + p + len(self.suffix)
        self.batches.check_memory(T * len(batch))
        input_ids = torch.full((len(batch), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        tok_pos, tok_word, word_rows = [], [], []
        for b, (ids, tok, word, first_word, last_word, offset) in enumerate(batch):
            row = self.prefix + ids + self.suffix
            input_ids[b, : len(row)] = torch.tensor(row)
            mask[b, : len(row)] = 1
            tok_pos.append(b * T + p + tok)
            tok_word.append(word - first_word + len(word_rows))
            word_rows.extend(offset + w for w in range(first_word, last_word + 1))
        pos = torch.from_numpy(np.concatenate(tok_pos)).to(self.device)
        seg = torch.from_numpy(np.concatenate(tok_word)).to(self.device)
        n = len(word_rows)
        with autocast(self.device, self.precision):
            hidden = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                output_hidden_states=True).hidden_states
        counts = torch.zeros(n, device=self.device).index_add_(0, seg, torch.ones_like(seg, dtype=torch.float))
        if self.pooling == "first":
            pick = torch.full((n,), input_ids.numel(), device=self.device).scatter_reduce(0, seg, pos, "amin")
        else:
            pick = torch.full((n,), -1, device=self.device).scatter_reduce(0, seg, pos, "amax")
        pick = pick.clamp(0, input_ids.numel() - 1)  # every word has a token (words.align: the unknown one)
        pooled = []
        for layer in self.layers:
            h = hidden[layer].reshape(-1, hidden[layer].shape[-1]).float()
            if self.pooling == "mean":
                v = torch.zeros(n, h.shape[1], device=self.device).index_add_(0, seg, h[pos])
                pooled.append(v / counts.clamp_min(1)[:, None])
            else:
                pooled.append(h[pick] * (counts > 0)[:, None])
        dtype = out[self.layers[0]].dtype
        host = torch.stack(pooled).to(getattr(torch, dtype.name)).cpu().numpy()  # one copy (and sync) per batch
        rows = np.asarray(word_rows)
        for i, layer in enumerate(self.layers):
            out[layer][rows] = host[i]

"""Bits per character (and per UTF-8 byte): how well the checkpoint's language-model head predicts
each language's test text, normalised by characters so that languages and tokenizers compare.

A masked LM is scored in PASSES masking passes: pass j masks the tokens whose index is j mod PASSES
(about 1 in 7, close to the 15 % masking of pretraining), so every token is predicted exactly once
from a context with the other passes' tokens visible (a pseudo-likelihood). A causal LM is scored
exactly: every token's log-probability given the text before it, with a sliding window
(xlp/models/causal_lm.py). bits = sum of -log2 p(token); bpc = bits / characters of the text the
tokens cover. The two estimators are not comparable with each other; each row names its estimator.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from xlp.data.conllu import read_conllu
from xlp.errors import XlpError
from xlp.hashing import data_files
from xlp.models.checkpoints import Checkpoint
from xlp.models.loading import TokenBatches, lm_kind, load_fast_tokenizer, load_model, pick_device
from xlp.tasks.base import RunData, Runtime, SentenceInputs, SentenceTask, result_row

if TYPE_CHECKING:
    from xlp.config import Spec

PASSES = 7
TEXT = "text"  # the corpus of a unit that reads bpc.text's plain-text files


def read_lines(path: Path, cap: int | None) -> list[str]:
    """The first `cap` non-empty lines of a UTF-8 text file (one text a line, surrounding space removed)."""
    texts: list[str] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").removeprefix("\ufeff" if n == 1 else "").strip()  # a BOM is no text
            except UnicodeDecodeError as e:
                raise XlpError(f"{path}:{n}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if line:
                texts.append(line)
                if cap is not None and len(texts) >= cap:
                    break
    if not texts:
        raise XlpError(f"{path}: no text (one text a line)")
    return texts


class BpcTask(SentenceTask):
    name = "bpc"
    metric = "bpc"
    higher_is_better = False
    definition = (f"bits per character of each language's test text, its UD test split or the lines of bpc.text's "
                  f"<lang>.txt (column bits_per_byte: per UTF-8 byte). A masked "
                  f"LM (estimator masked_pll): {PASSES} masking passes, pass j masks the tokens whose index is j mod "
                  f"{PASSES}, so every token is predicted once with the rest visible. A causal LM (estimator "
                  "causal_exact): every token's exact log-probability given the text before it (a sliding window, "
                  "each token scored once with the longest context that fits). The two estimators are not "
                  "comparable. Bits / characters covered; the row's layer is the model's last (the head reads it); "
                  "baseline = a uniform distribution over the vocabulary.")

    def reads_ud_in(self, spec: Spec) -> bool:
        return spec.bpc.text is None

    def inputs(self, spec: Spec, data: RunData, notes: list[str]) -> SentenceInputs | None:
        """Each language's UD test split, or with `bpc.text` its `<lang>.txt` (read and checked now)."""
        langs, cap = spec.grid(self.name)[0], spec.data.max_test_sentences
        if spec.bpc.text is None:
            files = data.test_files(langs)
            corpus = spec.data.test_split
        else:
            folder = Path(spec.bpc.text)
            if not folder.is_dir():
                raise XlpError(f"bpc.text: {folder} is not a folder")
            paths = {lang: folder / f"{lang}.txt" for lang in langs}
            missing = [p.name for p in paths.values() if not p.is_file()]
            if missing:
                raise XlpError(f"bpc.text: no {', '.join(missing)} in {folder} (one <lang>.txt a language)")
            for path in paths.values():
                read_lines(path, cap)
            digests = data_files(list(paths.values()))
            files, corpus = {lang: digests[p] for lang, p in paths.items()}, TEXT
        return SentenceInputs(langs=tuple(files), files=tuple(files.values()), corpus=corpus,
                              options=(("max_sentences", cap), ("lenient", spec.data.conllu == "lenient")))

    def describe_grid(self, spec: Spec, langs: list[str] | None) -> str:
        langs = langs or spec.grid(self.name)[0]
        return f"in-language {len(langs)} ({', '.join(langs)}); no cross-lingual pairs"

    @staticmethod
    def value_from_sums(sums: np.ndarray, count: int) -> np.ndarray:
        return sums[0] / sums[1]  # item_sums: each sentence's bits and characters

    def skip(self, ckpt: Checkpoint, spec: Spec) -> str | None:
        if lm_kind(ckpt, spec.trust_remote_code) is None:
            return f"bpc: {ckpt.name} has no language-model head (masked or causal); no bits per character for it"
        return None

    def unit_layers(self, layers: list[int], depth: int) -> tuple[int, ...]:
        return (depth,)

    def rows_per_unit(self, n_langs: int, n_layers: int, cross_lingual: bool) -> int:
        return n_langs

    def rows(self, unit, runtime: Runtime) -> list[dict]:
        cap, lenient = unit.inputs.option("max_sentences"), unit.inputs.option("lenient")
        causal = lm_kind(unit.ckpt, runtime.trust_remote_code) == "causal"
        scorer = _causal_scorer(unit.ckpt, runtime) if causal else MlmScorer(unit.ckpt, runtime)
        rows = []
        for lang, file in zip(unit.langs, unit.inputs.files):
            if unit.inputs.corpus == TEXT:
                texts = read_lines(Path(file.path), cap)
            else:
                texts = [s.text for s in read_conllu(file.path, cap, lenient=lenient) if s.text]
            if causal:
                scored = scorer.bits(texts)
                bits, chars, nbytes, tokens = scored.bits, scored.chars, scored.bytes, scored.tokens
            else:
                bits, chars, tokens = scorer.bits(texts)
                nbytes = np.array([len(t[: int(c)].encode("utf-8")) for t, c in zip(texts, chars)])
            uniform = np.log2(scorer.vocab_size) * tokens.sum() / chars.sum()  # a model that knows nothing
            for seed in unit.seeds:
                row = result_row(unit, task=self.name, layer=unit.layers[0], src=lang, tgt=lang, seed=seed,
                                 metric=self.metric, value=bits.sum() / chars.sum(), baseline=float(uniform),
                                 n_train=0, n_test=len(bits), invariant=True, correct=None,
                                 item_sums=np.stack([bits, chars]))
                rows.append({**row, "estimator": "causal_exact" if causal else "masked_pll",
                             "bits_per_byte": float(bits.sum() / nbytes.sum())})
        return rows


def _causal_scorer(ckpt: Checkpoint, runtime: Runtime):
    from xlp.models.causal_lm import CausalLmScorer

    return CausalLmScorer(ckpt, runtime.batch_tokens, runtime.device, runtime.trust_remote_code, runtime.allow_pickle)


class MlmScorer:
    def __init__(self, ckpt: Checkpoint, runtime: Runtime):
        from transformers import AutoModelForMaskedLM

        self.device = pick_device(runtime.device)
        self.model = load_model(ckpt, AutoModelForMaskedLM, runtime.trust_remote_code, runtime.allow_pickle,
                                "load its masked-LM head").eval().to(self.device)
        self.tokenizer = load_fast_tokenizer(ckpt, runtime.trust_remote_code)
        if self.tokenizer.mask_token_id is None:
            raise XlpError(f"checkpoint {ckpt.name}: its tokenizer has no mask token, so no MLM bits per character")
        self.batches = TokenBatches(ckpt, self.device, runtime.batch_tokens)
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
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            inputs = dict(input_ids=input_ids.to(self.device), attention_mask=attn.to(self.device))
            if self.head is not None:  # the vocabulary projection on masked rows only
                logits = self.head(self.model.base_model(**inputs).last_hidden_state[r, c]).float()
            else:
                logits = self.model(**inputs).logits[r, c].float()
        nll = -torch.log_softmax(logits, -1)[torch.arange(len(rows)), true.to(self.device)] / math.log(2)
        np.add.at(bits, np.asarray(owner), nll.cpu().numpy())

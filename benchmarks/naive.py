"""The hand-written way researchers extract word vectors, shared by the benchmarks as their baseline:
padded batches in file order, every layer copied out, a Python loop per word (first subword)."""

from __future__ import annotations

import torch


def naive_word_vectors(tok, model, sentences, batch: int = 32):
    """Per word of the sentences (in order): its first subword's vector at every layer, as lists."""
    for i in range(0, len(sentences), batch):
        words_of = [s.forms for s in sentences[i:i + batch]]
        enc = tok(words_of, is_split_into_words=True, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            hidden = [h.numpy() for h in model(**enc, output_hidden_states=True).hidden_states]
        for b, words in enumerate(words_of):
            wids = enc.word_ids(b)
            for w in range(len(words)):
                first = wids.index(w)
                yield [h[b, first].tolist() for h in hidden]

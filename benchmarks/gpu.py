"""GPU extraction: xlp's whole extraction path (tokenisation, length-bucketed batches, pooling on the
device, float16 copy, Parquet write) against a bare forward pass of the same XLM-R-base-sized model on
the same batches, in one process on one CUDA device; prints words/s for both and the ratio (target:
xlp >= 70 % of the bare forward pass). Then the probes of every layer fit on the GPU and on the CPU from
those features (cluster.gpus_per_probe): both times and the largest accuracy difference.

The model is XLM-R base's shape (12 layers, d = 768, 250,002 pieces) with random weights, so no hub is
needed; the tokenizer is XLM-R's from XLP_SHARED when present, else one trained here on the text.

    python benchmarks/gpu.py [--sentences 20000] [--batch-tokens 16384]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from xlp.data.conllu import Sentence, read_conllu
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.paths import shared_dir
from xlp.storage.features import PARQUET_OPTIONS, features_table


def sentences(n: int) -> list[Sentence]:
    ud = shared_dir() / "ud"
    files = sorted(ud.glob("*/*-ud-*.conllu")) if ud.is_dir() else []
    out = [s for f in files for s in read_conllu(f)][:n]
    rng = random.Random(0)
    words = [w for s in out for w in s.forms] or [f"w{i}{chr(97 + i % 26)}" for i in range(5000)]
    while len(out) < n:  # synthetic sentences of 8-40 words when the shared treebanks are not here
        forms = [rng.choice(words) for _ in range(rng.randint(8, 40))]
        out.append(Sentence(sent_id=str(len(out)), text=" ".join(forms), forms=forms, upos=["X"] * len(forms),
                            feats=["_"] * len(forms), heads=[0] + [1] * (len(forms) - 1), deprels=["dep"] * len(forms)))
    return out


def build_model(folder: Path, texts: list[str]) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    tok_file = shared_dir() / "models" / "xlmr-tokenizer" / "tokenizer.json"
    if tok_file.is_file():
        tok = XLMRobertaTokenizerFast(tokenizer_file=str(tok_file))
    else:
        from tokenizers import SentencePieceUnigramTokenizer

        sp = SentencePieceUnigramTokenizer()
        sp.train_from_iterator(texts, vocab_size=8000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                               unk_token="<unk>", show_progress=False)
        tok = XLMRobertaTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    config = XLMRobertaConfig(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, max_position_embeddings=514, pad_token_id=1)
    XLMRobertaModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def bare_forward(ex: FeatureExtractor, sents: list[Sentence]) -> float:
    """The same chunks and batches as xlp, forward pass only (bf16 autocast), no pooling, no copy out."""
    chunks = sorted(ex._chunks([s.forms for s in sents]), key=lambda c: len(c[0]))
    extra = len(ex.prefix) + len(ex.suffix)
    batches, batch = [], []
    for c in chunks:
        if batch and (len(c[0]) + extra) * (len(batch) + 1) > ex.batch_tokens:
            batches.append(batch)
            batch = []
        batch.append(c)
    batches.append(batch)
    tensors = []
    for b in batches:
        T = max(len(c[0]) for c in b) + extra
        ids = torch.full((len(b), T), ex.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, c in enumerate(b):
            row = ex.prefix + list(c[0]) + ex.suffix
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        tensors.append((ids.to(ex.device), mask.to(ex.device)))  # on the device before timing: the best case
    sync(ex.device)
    t = time.perf_counter()
    with torch.inference_mode(), torch.autocast(ex.device.type, dtype=torch.bfloat16):
        for ids, mask in tensors:
            ex.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    sync(ex.device)
    return time.perf_counter() - t


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def probes_on_both(sents: list[Sentence], vecs: dict, words: int, device: str) -> None:
    """cluster.gpus_per_probe: the POS probes of every layer fit on the GPU and on the CPU from the same
    features (the first 80 % of `words` words train, the rest test); prints both times and the largest
    accuracy difference over the layers (target: within the fit's tolerance, about 0.003)."""
    import numpy as np

    from xlp.probing.linear import fit_probes

    y = np.array([tag for s in sents for tag in s.upos])[:words]
    X = np.stack([vecs[layer][:words] for layer in sorted(vecs)])
    cut = int(0.8 * len(y))
    acc, took = {}, {}
    for where in (device, "cpu"):
        t = time.perf_counter()
        probes = fit_probes(X[:, :cut], y[:cut], device=where)
        sync(torch.device(where))
        took[where] = time.perf_counter() - t
        acc[where] = probes.score(X[:, cut:], y[cut:], "accuracy")[0]
    print(f"POS probes, {X.shape[0]} layers, {cut} train / {len(y) - cut} test words: {device} {took[device]:.1f} s, "
          f"CPU {took['cpu']:.1f} s ({took['cpu'] / took[device]:.1f}x); largest accuracy difference "
          f"{float(np.abs(acc[device] - acc['cpu']).max()):.4f} (target <= 0.003)")


def actor_path(model: Path, out: Path, batch_tokens: int, device: str, max_sentences: int | None) -> None:
    """The extraction actor's own code (xlp.run.work.ExtractionWorker) on one shard per CoNLL-U file at hand,
    one unit after another and then two at a time as Ray runs them (max_concurrency=2: the next unit on the
    model while the last one's shard is written); prints words/s of both."""
    from concurrent.futures import ThreadPoolExecutor

    from xlp.hashing import DataFile
    from xlp.run.units import ExtractUnit
    from xlp.run.work import ExtractionWorker, WorkContext
    from xlp.tasks.base import Runtime

    files = sorted((shared_dir() / "ud").glob("*/*-ud-*.conllu"))
    if len(files) < 2:
        print("actor path: skipped (no CoNLL-U files under XLP_SHARED/ud)")
        return
    ckpt = Checkpoint(0, str(model))
    units = [ExtractUnit(ckpt=ckpt, lang=f.name.split("-")[0], split=f.stem.rsplit("-", 1)[1],
                         file=DataFile(str(f), ""), max_sentences=max_sentences, lenient=True,
                         layers=tuple(range(13)), pooling="first", dtype="float16") for f in files]
    worker = ExtractionWorker(WorkContext(str(out), Runtime(device=device, batch_tokens=batch_tokens)))
    worker.run(units[0])  # load the checkpoint, warm up
    for name, workers in (("one unit at a time", 1), ("two at a time (the actor)", 2)):
        t = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            words = sum(r["rows"] for r in pool.map(worker.run, units))
        seconds = time.perf_counter() - t
        print(f"actor path, {len(units)} shards, {words:,} words, {name:26s}: {words / seconds:10,.0f} words/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sentences", type=int, default=20000)
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--probe-words", type=int, default=20000, help="words of the probe check (GPU vs CPU fit)")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script where no GPU is")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine (or --device cpu for a dry run)")
    sents = sentences(args.sentences)
    n = sum(len(s.forms) for s in sents)
    tmp = Path(tempfile.mkdtemp())
    build_model(tmp / "model", [s.text for s in sents[:5000]])
    ex = FeatureExtractor(Checkpoint(0, str(tmp / "model")), layers="all", batch_tokens=args.batch_tokens,
                              device=args.device)
    ex.extract([s.forms for s in sents[:200]])  # warm up kernels and the allocator
    t_bare = bare_forward(ex, sents)
    t = time.perf_counter()
    vecs = ex.extract([s.forms for s in sents])
    pq.write_table(features_table(sents, vecs), tmp / "xlp.parquet", **PARQUET_OPTIONS)
    t_xlp = time.perf_counter() - t
    card = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device {card}, torch {torch.__version__}, {len(sents)} sentences, {n} words, "
          f"13 layers of d = 768, batch_tokens {args.batch_tokens}")
    print(f"bare forward pass (bf16, inputs on device): {n / t_bare:12,.0f} words/s")
    print(f"xlp extraction path incl. Parquet write   : {n / t_xlp:12,.0f} words/s")
    print(f"xlp / bare                                : {t_bare / t_xlp:12.1%} (target >= 70%)")
    probes_on_both(sents, vecs, args.probe_words, args.device)
    actor_path(tmp / "model", tmp / "run", args.batch_tokens, args.device, None if args.device == "cuda" else 10)


if __name__ == "__main__":
    main()

"""`xlp pretrain`: a miniature XLM-R replica trained on the UD train/dev text and the UDHR, saving a
checkpoint series (dense early, sparse late) that xlp can probe like any other.

The same spec gives the same bytes: the tokenizer is trained by SentencePiece on one thread (the
`tokenizers` Unigram trainer sums floats in hash order, so its vocabulary changed from run to run), and
every step draws its batch and masks from RNGs seeded by (seed, step), so a resumed run continues exactly
where the last saved checkpoint left off.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from xlp.config import PretrainSpec
from xlp.errors import XlpError
from xlp.models import quiet_transformers
from xlp.models.checkpoints import METADATA_FILE
from xlp.models.replica_corpus import SPECIALS, corpus, sampling_probs, train_tokenizer

MANIFEST = "xlp_pretrain.json"
STATE_DIR = "train_state"
DEFAULT_SCHEDULE = [0, 25, 50, 100, 200, 400, 800, 1600, 3000, 6000, 12000, 25000, 50000, 100000]


def save_schedule(cfg: PretrainSpec) -> list[int]:
    if cfg.save_steps is not None:
        steps = sorted({s for s in cfg.save_steps if 0 <= s <= cfg.steps} | {0, cfg.steps})
    else:
        steps = sorted({s for s in DEFAULT_SCHEDULE if s < cfg.steps} | {cfg.steps})
    return steps


def is_complete(cfg: PretrainSpec) -> bool:
    """Whether every checkpoint of the schedule is saved in cfg.out."""
    return all((Path(cfg.out) / f"step_{s}" / METADATA_FILE).is_file() for s in save_schedule(cfg))


def _model(cfg: PretrainSpec, vocab: int):
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    config = XLMRobertaConfig(vocab_size=vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                              num_attention_heads=cfg.heads, intermediate_size=cfg.ffn,
                              max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                              hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                              bos_token_id=0, eos_token_id=2)
    return XLMRobertaForMaskedLM(config)


def mask_tokens(ids: torch.Tensor, special: torch.Tensor, vocab: int, mask_id: int, gen: torch.Generator,
                prob: float = 0.15, starts: torch.Tensor | None = None):
    """BERT/XLM-R masking: `prob` of real tokens are targets; 80% -> <mask>, 10% random, 10% unchanged.
    With `starts` (B, T): whole-word masking, a word (a start and the tokens up to the next) is chosen whole."""
    labels = ids.clone()
    draw = torch.rand(ids.shape, generator=gen)
    if starts is not None:  # every token takes the draw of its word's first token
        pos = torch.arange(ids.shape[1]).expand_as(ids) * (starts | special)
        draw = draw.gather(1, pos.cummax(1).values)
    target = (draw < prob) & ~special
    labels[~target] = -100
    inputs = ids.clone()
    roll = torch.rand(ids.shape, generator=gen)
    inputs[target & (roll < 0.8)] = mask_id
    rand = target & (roll >= 0.8) & (roll < 0.9)
    inputs[rand] = torch.randint(len(SPECIALS), vocab, ids.shape, generator=gen)[rand]
    return inputs, labels


def word_starts(tok) -> torch.Tensor:
    """Per vocabulary id: whether the piece begins a word (it starts with '▁', or with a CJK character,
    since Chinese text has no spaces and a whole sentence would otherwise be one word)."""
    vocab = tok._tokenizer.get_vocab()
    starts = torch.zeros(len(vocab), dtype=torch.bool)
    for piece, i in vocab.items():
        starts[i] = piece.startswith("\u2581") or ("\u3400" <= piece[:1] <= "\u9fff")
    return starts


class Batches:
    """Full-length sequences packed from consecutive sentences of one language (RoBERTa's
    FULL-SENTENCES packing, so no step is spent on padding); languages sampled by size^alpha,
    with an RNG seeded per step."""

    def __init__(self, texts: dict[str, list[str]], tok, cfg: PretrainSpec):
        self.langs = sorted(texts)
        self.cfg = cfg
        # each sentence as its pieces followed by </s>, without the leading <s>
        self.ids = {lang: [e.ids[1:] for e in tok._tokenizer.encode_batch(texts[lang])] for lang in self.langs}
        self.probs = sampling_probs([sum(len(t) for t in texts[lang]) for lang in self.langs], cfg.alpha)
        self.vocab = tok._tokenizer.get_vocab_size()
        self.starts = word_starts(tok) if cfg.whole_word else None

    def batch(self, seed: int, step: int):
        rng = np.random.default_rng([seed, step])
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        width = self.cfg.max_length
        ids = torch.empty((self.cfg.batch_size, width), dtype=torch.long)
        for row, li in enumerate(rng.choice(len(self.langs), size=self.cfg.batch_size, p=self.probs)):
            sents = self.ids[self.langs[li]]
            i = int(rng.integers(len(sents)))
            seq = [0]
            while len(seq) < width:
                seq += sents[i % len(sents)]
                i += 1
            ids[row] = torch.tensor(seq[:width])
        attn = torch.ones_like(ids)
        special = ids < len(SPECIALS)
        starts = None if self.starts is None else self.starts[ids]
        inputs, labels = mask_tokens(ids, special, self.vocab, 4, gen, self.cfg.mask_prob, starts)
        return inputs, attn, labels


def mlm_loss(model, inputs, attn, labels) -> torch.Tensor:
    """Cross-entropy on masked positions only (the LM head runs on those rows alone)."""
    hidden = model.roberta(input_ids=inputs, attention_mask=attn).last_hidden_state
    sel = labels != -100
    logits = model.lm_head(hidden[sel])
    return torch.nn.functional.cross_entropy(logits, labels[sel])


def _config_hash(cfg: PretrainSpec, texts: dict[str, list[str]]) -> str:
    # where the text lives does not matter, only what it is
    fields = cfg.model_dump(exclude={"out", "ud_root", "udhr", "threads"}) | {"languages": sorted(texts)}
    fields["text"] = hashlib.sha256("\n".join(t for lang in sorted(texts) for t in texts[lang]).encode()).hexdigest()
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _claim(out: Path, run_hash: str, cfg: PretrainSpec) -> None:
    """Refuse a folder that holds another run's checkpoints; never overwrite them."""
    manifest = out / MANIFEST
    if manifest.is_file():
        theirs = json.loads(manifest.read_text())
        if theirs.get("hash") != run_hash:
            raise XlpError(f"{out} holds checkpoints of another pretraining run (config hash {theirs.get('hash')}, "
                           f"this one {run_hash}); choose another --out or delete that folder")
        return
    if out.exists() and any(out.glob("step_*")):
        raise XlpError(f"{out} holds checkpoints not made by xlp pretrain; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"hash": run_hash, "config": cfg.model_dump()}, indent=1))


def pretrain(cfg: PretrainSpec, console: Console | None = None, quiet: bool = False) -> list[Path]:
    """Train (or resume, or find finished) the series; returns the checkpoint folders."""
    console = console or Console(stderr=True)
    quiet_transformers()
    out = Path(cfg.out)
    schedule = save_schedule(cfg)
    texts = corpus(cfg)
    run_hash = _config_hash(cfg, texts)
    _claim(out, run_hash, cfg)
    done = [s for s in schedule if (out / f"step_{s}" / METADATA_FILE).is_file()]
    if len(done) == len(schedule):
        return [out / f"step_{s}" for s in schedule]
    threads = torch.get_num_threads()
    if cfg.threads is not None:  # one thread: on a shared or busy CPU, two threads ran 15x slower per step
        torch.set_num_threads(cfg.threads)
    try:
        _train(cfg, out, texts, run_hash, schedule, done, console, quiet)
    finally:
        torch.set_num_threads(threads)
    return [out / f"step_{s}" for s in schedule]


def _train(cfg: PretrainSpec, out: Path, texts: dict[str, list[str]], run_hash: str, schedule: list[int],
           done: list[int], console: Console, quiet: bool) -> None:
    from transformers import AutoTokenizer

    torch.manual_seed(cfg.seed)
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        train_tokenizer(texts, cfg, tok_dir)
    # train with the tokenizer exactly as AutoTokenizer loads it back, as every user of the series will
    tok = AutoTokenizer.from_pretrained(tok_dir)
    batches = Batches(texts, tok, cfg)
    model = _model(cfg, batches.vocab)
    start = 0
    log_rows: list[dict] = []
    state = None
    if done:
        start = done[-1]
        model, state = _resume(out, start)
        log_rows = [r for r in _read_log(out) if int(r["step"]) <= start]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    warm = max(1, cfg.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm))))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    eval_batch = [batches.batch(cfg.seed + 7919, 10_000_000 + i) for i in range(4)]

    def save(step: int, loss: float | None) -> None:
        d = out / f"step_{step}"
        tmp = out / f"_tmp_step_{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        model.eval()
        with torch.no_grad():
            held_out = float(np.mean([mlm_loss(model, *b).item() for b in eval_batch]))
        model.train()
        (tmp / METADATA_FILE).write_text(json.dumps(
            {"step": step, "tokens": step * cfg.batch_size * cfg.max_length,  # packed rows: no padding
             "run": run_hash, "train_loss": loss, "mlm_loss": held_out}, indent=1))
        state = out / STATE_DIR
        state.mkdir(exist_ok=True)
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, state / f"_tmp_{step}.pt")
        (state / f"_tmp_{step}.pt").replace(state / f"step_{step}.pt")
        _write_log(out, log_rows)
        shutil.rmtree(d, ignore_errors=True)
        tmp.replace(d)
        for old in state.glob("step_*.pt"):  # only the newest state is needed to resume
            if old.name != f"step_{step}.pt":
                old.unlink()

    crash_after = int(os.environ["XLP_PRETRAIN_CRASH_AFTER"]) if os.environ.get("XLP_PRETRAIN_CRASH_AFTER") else None
    model.train()
    if start == 0 and 0 not in done:
        save(0, None)
    t0 = time.time()
    with Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=quiet) as progress:
        bar = progress.add_task("pretrain", total=cfg.steps, completed=start, loss="-")
        for step in range(start + 1, cfg.steps + 1):
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout
            loss = mlm_loss(model, *batches.batch(cfg.seed, step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            value = loss.item()
            if not math.isfinite(value):
                raise XlpError(f"pretrain: loss became {value} at step {step}; lower pretrain.lr")
            log_rows.append({"step": step, "loss": round(value, 5), "lr": sched.get_last_lr()[0],
                             "seconds": round(time.time() - t0, 3)})
            progress.update(bar, advance=1, loss=f"{value:.3f}")
            if step in schedule:
                save(step, value)
                if crash_after is not None and step >= crash_after:
                    raise RuntimeError(f"injected crash after step {step} (XLP_PRETRAIN_CRASH_AFTER)")


def _resume(out: Path, step: int):
    from transformers import XLMRobertaForMaskedLM

    state_file = out / STATE_DIR / f"step_{step}.pt"
    if not state_file.is_file():
        raise XlpError(f"{out}: cannot resume from step {step}: {state_file} is missing; "
                       f"delete {out} to start over")
    model = XLMRobertaForMaskedLM.from_pretrained(out / f"step_{step}")
    state = torch.load(state_file, weights_only=True)
    return model, state


def _read_log(out: Path) -> list[dict]:
    f = out / "train_log.csv"
    if not f.is_file():
        return []
    with open(f) as fh:
        return list(csv.DictReader(fh))


def _write_log(out: Path, rows: list[dict]) -> None:
    tmp = out / "_train_log.csv"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["step", "loss", "lr", "seconds"])
        w.writeheader()
        w.writerows(rows)
    tmp.replace(out / "train_log.csv")

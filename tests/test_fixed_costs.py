"""What pre-flight and the workers do once, or not at all: a split no unit reads is neither hashed nor parsed;
a series whose configs differ but whose tokenizer files are the same loads its tokenizer once per process."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from conftest import MINILM, UD, write_spec

from xlp.config import load_spec
from xlp.errors import XlpError
from xlp.run.plan import make_plan


def test_a_split_no_unit_reads_is_neither_hashed_nor_parsed(tmp_path, tiny_series, monkeypatch):
    """bpc reads the test split of its languages only: a train file beside it that would not parse does not stop
    the launch and is not hashed (the digest cache never sees it); with POS, whose probes train on it, pre-flight
    reads it and refuses it by name."""
    monkeypatch.setenv("XLP_CACHE", str(tmp_path / "cache"))
    tb = tmp_path / "ud" / "UD_English-X"
    tb.mkdir(parents=True)
    (tb / "en_x-ud-test.conllu").symlink_to(UD / "UD_English-EWT" / "en_ewt-ud-test.conllu")
    (tb / "en_x-ud-train.conllu").write_text("1\tnot\ta\tCoNLL-U\tline\n\n")
    spec = dict(name="reads", output=str(tmp_path / "run"), checkpoints=[{"path": f"{tiny_series}/step_0"}],
                data={"ud_root": str(tmp_path / "ud"), "languages": ["en"], "max_test_sentences": 5},
                layers=[0])
    plan = make_plan(load_spec(write_spec(tmp_path / "bpc.yaml", tasks=["bpc"], **spec)))
    (unit,) = plan.probe
    assert [f.path for f in unit.inputs.files] == [str(tb / "en_x-ud-test.conllu")]
    hashed = {key.rsplit("|", 2)[0] for key in json.loads((tmp_path / "cache" / "digests.json").read_text())}
    assert str((tb / "en_x-ud-test.conllu").resolve()) in hashed
    assert str((tb / "en_x-ud-train.conllu").resolve()) not in hashed
    with pytest.raises(XlpError, match="en_x-ud-train.conllu"):
        make_plan(load_spec(write_spec(tmp_path / "pos.yaml", tasks=["pos"], **spec)))


def test_checkpoints_whose_configs_differ_share_one_loaded_tokenizer(tmp_path):
    """A config.json that differs between checkpoints (a step, a path) but not in what picks the tokenizer's class
    reuses the tokenizer this process loaded; other tokenizer files, or another class, load their own."""
    from xlp.models.checkpoints import Checkpoint, load_tokenizer

    copies = []
    for i, change in enumerate(({"saved_at_step": 1}, {"saved_at_step": 2}, {"tokenizer_class": "BertTokenizer"})):
        d = tmp_path / f"c{i}"
        d.mkdir()
        for f in MINILM.iterdir():
            if f.is_file() and f.name not in ("config.json", "tokenizer_config.json"):
                (d / f.name).symlink_to(f)
        shutil.copy(MINILM / "tokenizer_config.json", d)
        config = json.loads((MINILM / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**config, **change}))
        copies.append(Checkpoint(step=i, location=str(d)))
    first = load_tokenizer(copies[0], use_fast=True)
    assert load_tokenizer(copies[1], use_fast=True) is first
    settings = json.loads((tmp_path / "c1" / "tokenizer_config.json").read_text())
    (tmp_path / "c1" / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": 77}))
    assert load_tokenizer(copies[1], use_fast=True).model_max_length == 77
    assert load_tokenizer(copies[2], use_fast=True) is not load_tokenizer(copies[0], use_fast=True)


def test_waiting_probes_are_released_as_a_scan_of_every_waiting_unit_would(tiny_series, tmp_path):
    """The driver's index of probe units by the shards they still need releases, after each extraction unit that
    finishes or fails, the units that scanning every waiting unit (the plain way) finds ready or failed, and those
    whose training shard exists while a target's does not (to fit), in plan order, each once; over random orders
    of a real plan's extraction units, some of them failing."""
    import random

    from conftest import grid_spec

    from xlp.run.schedule import WaitingProbes

    plan = make_plan(grid_spec(tmp_path, tiny_series, tmp_path / "run"))
    keys = [u.key for u in plan.extract]
    rng = random.Random(0)
    fits_seen = 0
    for trial in range(20):
        done = set(rng.sample(keys, trial % 4))  # extracted by an earlier launch
        order = [k for k in rng.sample(keys, len(keys)) if k not in done]
        broken = set(rng.sample(order, trial % 3))
        fast = WaitingProbes(plan.probe, done)
        waiting, failed, released, fitting = list(plan.probe), set(), [], set()
        ready, fit = fast.ready_now()
        steps = [(None, ready, [], fit)] + [(k, [], [], []) for k in order]
        for i, (key, ready, lost, fit) in enumerate(steps):
            if key in broken:
                failed.add(key)
                lost = fast.failed(key)
            elif key is not None:
                done.add(key)
                ready, fit = fast.extracted(key)
            plain_lost = [u for u in waiting if any(k in failed for k in u.needs)]
            plain_ready = [u for u in waiting if u not in plain_lost and all(k in done for k in u.needs)]
            waiting = [u for u in waiting if u not in plain_lost and u not in plain_ready]
            plain_fit = [u for u in waiting if u.key not in fitting and all(k in done for k in u.fit_needs)]
            fitting |= {u.key for u in plain_fit}
            assert (ready, lost, fit) == (plain_ready, plain_lost, plain_fit), (trial, i)
            released += ready + lost
            fits_seen += len(fit)
        assert len(released) == len({u.key for u in released})  # each at most once
        assert not waiting and len(released) == len(plan.probe)
    assert fits_seen  # the orders include units that fit before their targets' shards exist


def test_a_worker_reads_each_unchanged_file_once_and_a_changed_one_again(tmp_path):
    """A probe worker's test shards and an extraction actor's treebank splits are read once per process while the
    file is unchanged, with the plain reader's values; a shard whose bytes change (same size) is read again and
    refused by its digest, a split that changes is parsed again."""
    import numpy as np
    import pyarrow as pa

    from xlp.data.conllu import read_part
    from xlp.run.recent import Recent, recent_split, recent_table
    from xlp.storage import Store
    from xlp.storage.store import ChecksumMismatch

    store = Store(str(tmp_path / "run"))
    written = store.write_table("features/x.parquet", pa.table({"layer_0": np.arange(50.0), "upos": ["NOUN"] * 50}))
    first = recent_table(store, "features/x.parquet", ["layer_0", "upos"], written.sha256)
    assert first.equals(store.read_table("features/x.parquet", sha256=written.sha256))
    assert recent_table(store, "features/x.parquet", ["layer_0", "upos"], written.sha256) is first
    path = tmp_path / "run" / "features" / "x.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch):
        recent_table(store, "features/x.parquet", ["layer_0", "upos"], written.sha256)

    split = tmp_path / "en-ud-test.conllu"
    shutil.copy(UD / "UD_English-EWT" / "en_ewt-ud-test.conllu", split)
    sentences = recent_split(str(split), 5, False, None)
    assert sentences == read_part(str(split), 5, False, None) and len(sentences) == 5
    assert recent_split(str(split), 5, False, None) is sentences
    split.write_text("1\tHello\thello\tINTJ\t_\t_\t0\troot\t_\t_\n\n")
    assert [s.forms for s in recent_split(str(split), 5, False, None)] == [["Hello"]]

    kept = Recent(10, len)
    for key, value in (("a", "12345"), ("b", "1234"), ("big", "x" * 11), ("c", "12")):
        kept.get(key, lambda v=value: v)
    assert kept.get("a", lambda: "new") == "new" and kept.get("b", lambda: "new") == "1234"  # a was dropped first
    assert kept.get("big", lambda: "again") == "again"  # over the budget alone: never kept
    kept.get("d", lambda: "123", most=2)  # over what its caller allows: not kept
    assert kept.get("d", lambda: "new") == "new"


def test_extraction_starts_with_the_largest_training_shard_of_each_checkpoint(tiny_series, tmp_path):
    """Within a checkpoint the shards probes are fit on come first, the largest file first (its fit is the longest:
    it starts earliest, beside the rest of the extraction), then the test shards; checkpoints keep the plan's order."""
    import os

    from conftest import grid_spec

    from xlp.run.schedule import extraction_order

    plan = make_plan(grid_spec(tmp_path, tiny_series, tmp_path / "run", languages=("vi", "de", "en")))
    fit_shards = {k for u in plan.probe for k in u.fit_needs}
    order = extraction_order(plan.extract, fit_shards)
    assert list(order) == list(dict.fromkeys(u.ckpt for u in plan.extract))
    for ckpt, units in order.items():
        assert sorted(map(id, units)) == sorted(id(u) for u in plan.extract if u.ckpt == ckpt)
        fits = [u for u in units if u.key in fit_shards]
        assert units[: len(fits)] == fits and len(fits) == 3
        sizes = [os.stat(u.file.path).st_size for u in fits]
        assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 3
        assert [u.lang for u in fits] != [u.lang for u in plan.extract if u.ckpt == ckpt and u in fits]


def test_an_extractor_takes_units_onto_its_model_in_the_order_they_were_sent(tiny_series, tmp_path):
    """An extractor runs the two units in its hands on two threads; whichever thread starts first, the unit sent
    first (the largest training shard) takes the model first. A unit whose earlier turn never comes (a retry after
    a restart) waits TURN_WAIT at most."""
    import threading

    from conftest import grid_spec

    from xlp.run.work import TURN_WAIT, ExtractionWorker, WorkContext

    spec = grid_spec(tmp_path, tiny_series, tmp_path / "run")
    units = [u for u in make_plan(spec).extract if u.ckpt.step == 100][:3]
    worker = ExtractionWorker(WorkContext(spec.output))
    got = {}

    def run(i: int, turn: int) -> None:
        got[i] = worker.run(units[i], None, turn)
        got[i]["finished"] = time.time()

    second = threading.Thread(target=run, args=(1, 1))
    second.start()  # the second unit's thread starts first, and holds back
    time.sleep(0.5)
    first = threading.Thread(target=run, args=(0, 0))
    first.start()
    first.join(), second.join()
    began = {i: r["finished"] - r["seconds"] for i, r in got.items()}
    assert began[0] < began[1] and got[0]["load_seconds"] > 0  # the first loaded the model, the second found it
    t = time.time()
    run(2, 5)  # turns 2-4 never come
    assert TURN_WAIT <= time.time() - t and got[2]["rows"] > 0

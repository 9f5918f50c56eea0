"""One home per concern: tasks are found only through their registry, a unit's hash covers every field it
carries, the pretraining defaults live in the spec, and a researcher's own task runs like a built-in one."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import MINILM, UD, run_xlp, write_spec

from xlp.config import ProbeSpec
from xlp.hashing import DataFile
from xlp.models.checkpoints import Checkpoint
from xlp.models.loading import weight_sizes
from xlp.run.manifest import load_manifest
from xlp.run.units import ExtractUnit, ProbeUnit, SentenceUnit
from xlp.tasks import BUILT_IN, get_task
from xlp.tasks.base import SentenceInputs

PACKAGE = Path(__file__).resolve().parents[1] / "xlp"
PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"


def test_no_task_name_outside_the_tasks_package():
    """A new task is one module and one registry line: nothing else in xlp names a task. (storage/ is left
    out: its columns are CoNLL-U's, one of which is also called deprel.)"""
    names = set(BUILT_IN) | {f"{a}+{b}" for a in BUILT_IN for b in BUILT_IN}
    found = []
    for f in PACKAGE.rglob("*.py"):
        if f.parent.name in ("tasks", "storage"):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{f.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, found


def _other(value):
    """A different value of the same kind, for every kind of field a unit has."""
    if isinstance(value, Checkpoint):
        return dataclasses.replace(value, digest=value.identity() + "x")
    if isinstance(value, DataFile):
        return DataFile(value.path, value.sha256 + "x")
    if isinstance(value, ProbeSpec):
        return value.model_copy(update={"l2": value.l2 * 2})
    if isinstance(value, SentenceInputs):
        return dataclasses.replace(value, options=(*value.options, ("cap", 1)))
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return (*value, _other(value[-1])) if value else ("x",)
    if value is None:
        return 1
    raise AssertionError(f"no other value for {value!r}")


@pytest.mark.parametrize("unit", [
    ExtractUnit(ckpt=Checkpoint(0, "/c", digest="d0"), lang="en", split="test", file=DataFile("/f", "s"),
                max_sentences=10, lenient=False, layers=(0, 1), pooling="first", dtype="float16"),
    ProbeUnit(ckpt=Checkpoint(0, "/c", digest="d0"), tasks=(BUILT_IN["pos"],), layers=(0, 1), src="en",
              pooling="first",
              train_split="train", targets=(("en", "test"),), probe=ProbeSpec(), needs=("k",), inputs=("h",)),
    SentenceUnit(ckpt=Checkpoint(0, "/c", digest="d0"), sentence_task=BUILT_IN["bpc"], layers=(2,),
                 inputs=SentenceInputs(("en",), (DataFile("/f", "s"),), "test", (("cap", 5),)), seeds=(0,)),
], ids=["extract", "probe", "sentence"])
def test_a_unit_hash_covers_every_field(unit):
    """Whatever a worker reads is a field of its unit, so changing any field changes the hash the ledger
    compares; where the data or checkpoint lies (not what it is) does not."""
    for f in dataclasses.fields(unit):
        value = getattr(unit, f.name)
        if isinstance(value, (Checkpoint, DataFile)) or f.name not in ("tasks", "sentence_task"):
            changed = dataclasses.replace(unit, **{f.name: _other(value)})
            assert changed.hash != unit.hash, f.name
    moved = dataclasses.replace(unit, ckpt=Checkpoint(0, "/elsewhere", digest="d0"))
    assert moved.hash == unit.hash
    if isinstance(unit, ExtractUnit):
        assert dataclasses.replace(unit, file=DataFile("/moved", "s")).hash == unit.hash


def _small_ud(root: Path, n: int = 60) -> Path:
    """A UD folder of its own: the first sentences of two real treebanks, in the release layout."""
    for folder, stem in (("UD_English-EWT", "en_ewt"), ("UD_Vietnamese-VTB", "vi_vtb")):
        (root / folder).mkdir(parents=True)
        for split in ("dev", "test"):
            blocks = (UD / folder / f"{stem}-ud-{split}.conllu").read_text(encoding="utf-8").split("\n\n")
            (root / folder / f"{stem}-ud-{split}.conllu").write_text("\n\n".join(blocks[:n]) + "\n\n", encoding="utf-8")
    return root


def test_pretrain_then_launch_on_a_spec_with_its_own_data(tmp_path):
    """`xlp pretrain SPEC` trains on the spec's own UD root and languages, so the next `xlp launch SPEC`
    finds its series and probes it instead of refusing the folder as another run's."""
    ud = _small_ud(tmp_path / "ud")
    spec = write_spec(tmp_path / "own.yaml", name="own", output=str(tmp_path / "run"),
                      pretrain={"out": str(tmp_path / "mini"), "steps": 4, "save_steps": [0, 4], "layers": 1,
                                "hidden": 32, "heads": 2, "ffn": 64, "vocab_size": 500, "batch_size": 4,
                                "max_length": 24, "warmup": 1},
                      checkpoints=[{"path": str(tmp_path / "mini" / "step_*")}],
                      data={"ud_root": str(ud), "languages": ["vi", "en"], "max_train_sentences": 30,
                            "max_test_sentences": 20},
                      tasks=["pos"], layers=[1], cross_lingual=False)
    r = run_xlp("pretrain", spec, "--quiet")
    assert r.returncode == 0, r.stderr
    # what it trained on, as the series records it: the spec's data, not the shared UD or all its languages
    recorded = json.loads((tmp_path / "mini" / "xlp_pretrain.json").read_text())["config"]
    assert (recorded["ud_root"], recorded["languages"]) == (str(ud), ["en", "vi"])
    weights = (tmp_path / "mini" / "step_4" / "model.safetensors").stat().st_mtime_ns
    r = run_xlp("launch", spec, "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mini" / "step_4" / "model.safetensors").stat().st_mtime_ns == weights  # not retrained
    probes = pd.read_parquet(tmp_path / "run" / "results" / "probes.parquet")
    assert set(probes.src_lang) == {"en", "vi"} and set(probes.step) == {0, 4}


def test_pretrain_options_override_the_spec(tmp_path):
    """`xlp pretrain SPEC --out DIR --languages L --steps N`: the options win over the spec's `pretrain:` section
    (and over the languages it takes from `data:`); the spec's own folder is left alone."""
    ud = _small_ud(tmp_path / "ud")
    spec = write_spec(tmp_path / "own.yaml", name="own", output=str(tmp_path / "run"),
                      pretrain={"out": str(tmp_path / "mini"), "steps": 4, "save_steps": [0, 4], "layers": 1,
                                "hidden": 16, "heads": 2, "ffn": 32, "vocab_size": 500, "batch_size": 2,
                                "max_length": 16, "warmup": 1},
                      checkpoints=[{"path": str(tmp_path / "mini" / "step_*")}],
                      data={"ud_root": str(ud), "languages": ["vi", "en"]}, tasks=["pos"])
    other = tmp_path / "other"
    r = run_xlp("pretrain", spec, "--out", other, "--languages", "vi", "--steps", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"2 checkpoints in {other}: step_0, step_2" in r.stdout.replace("\n", "")
    assert sorted(p.name for p in other.glob("step_*")) == ["step_0", "step_2"] and not (tmp_path / "mini").exists()
    recorded = json.loads((other / "xlp_pretrain.json").read_text())["config"]
    assert (recorded["out"], recorded["languages"], recorded["steps"]) == (str(other), ["vi"], 2)
    assert (recorded["ud_root"], recorded["hidden"]) == (str(ud), 16)  # the rest still the spec's


def test_bpc_refuses_pickled_hub_weights(tmp_path):
    """bpc loads its masked-LM head through the same path as extraction: a hub checkpoint whose only
    weights are a pickle is refused unless `allow_pickle`, instead of being unpickled."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("0" * 40)
    torch.manual_seed(0)
    tok = BertTokenizerFast.from_pretrained(MINILM)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32)
    model = BertForMaskedLM(cfg)
    model.save_pretrained(snapshot)
    (snapshot / "model.safetensors").unlink()  # as old hub repositories hold it: a pickle only
    torch.save(model.state_dict(), snapshot / "pytorch_model.bin")
    tok.save_pretrained(snapshot)
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("0" * 40)
    assert (snapshot / "pytorch_model.bin").is_file() and not (snapshot / "model.safetensors").exists()
    score = """
import sys
from xlp.errors import XlpError
from xlp.models.checkpoints import Checkpoint
from xlp.models.masked_lm import MlmScorer
try:
    scorer = MlmScorer(Checkpoint(0, "org/tiny", revision="main"), allow_pickle=sys.argv[1] == "yes")
except XlpError as e:
    print("refused:", e)
else:
    bits, chars, _ = scorer.bits(["The cat sat on the mat ."])
    print("scored:", bits.sum() > 0, int(chars.sum()))
"""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    refused = subprocess.run([sys.executable, "-c", score, "no"], capture_output=True, text=True, env=env)
    assert "refused: checkpoint org/tiny@main: cannot load its masked-LM head" in refused.stdout, refused.stderr
    assert "allow_pickle" in refused.stdout
    allowed = subprocess.run([sys.executable, "-c", score, "yes"], capture_output=True, text=True, env=env)
    assert "scored: True 24" in allowed.stdout, allowed.stderr  # the user's explicit choice


def test_unknown_or_broken_task_names_the_key(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", name="s", output=str(tmp_path / "run"),
                      checkpoints=[{"path": str(MINILM)}], data={"ud_root": str(UD), "languages": ["en"]},
                      tasks=["pos", "no_such_module:Task"])
    r = run_xlp("validate", spec, "--schema-only")
    assert r.returncode == 1 and "key `tasks.1`" in r.stderr and "cannot import" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture()
def plugin_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    yield
    sys.modules.pop("ud_features", None)


def test_a_researchers_own_task_runs_like_a_built_in_one(tmp_path, ray_local, plugin_path):
    """examples/plugins/ud_features.py, outside xlp, probes a UD feature chosen by its own option: named in the
    spec as `module:Class` with its section under its name, it is validated, planned, hashed (its option with
    it), run on Ray workers, reduced and reported like a built-in task."""
    from xlp.run.plan import make_plan

    spec = dict(name="feats", output=str(tmp_path / "run"), checkpoints=[{"path": str(MINILM)}],
                data={"ud_root": str(UD), "languages": ["en", "de"], "max_train_sentences": 300,
                      "max_test_sentences": 150},
                tasks=["pos", "ud_features:UdFeatureTask"], ud_feature={"feature": "Number"}, layers=[3],
                cross_lingual=True)
    r = run_xlp("validate", write_spec(tmp_path / "bad.yaml", **{**spec, "ud_feature": {"feature": "number"}}))
    assert r.returncode == 1 and "key `ud_feature.feature`" in r.stderr  # its own model checks its option
    plans = {f: make_plan(load_manifest(write_spec(tmp_path / f"{f}.yaml", **{**spec, "ud_feature": {"feature": f}})))
             for f in ("Number", "Case")}
    hashes = {f: {u.key: u.hash for u in plan.probe} for f, plan in plans.items()}
    assert {k for k in hashes["Number"] if hashes["Number"][k] != hashes["Case"][k]} == {
        k for k in hashes["Number"] if "task=ud_feature" in k} != set()  # the option is in its units' hashes only
    r = run_xlp("launch", tmp_path / "Number.yaml", "--quiet")
    assert r.returncode == 0, r.stderr
    probes = pd.read_parquet(tmp_path / "run" / "results" / "probes.parquet")
    number = probes[probes.task == "ud_feature"]
    assert len(number) == 4  # en->en, en->de, de->en, de->de
    en = number[(number.src_lang == "en") & (number.tgt_lang == "en")].iloc[0]
    assert en.value > en.baseline + 0.1  # MiniLM is an English model: measured 0.93 against 0.79
    report = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "the UD feature Number" in report
    assert run_xlp("launch", tmp_path / "Number.yaml", "--quiet", "--json").stdout.count('"event": "unit"') == 0


def test_a_plugin_registered_under_the_entry_point_group(tmp_path, monkeypatch, plugin_path):
    """An installed package can register its task under `xlp.tasks`; the spec then names it like a built-in."""
    dist = tmp_path / "xlp_ud_features-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: xlp-ud-features\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[xlp.tasks]\nnumber = ud_features:NumberTask\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    task = get_task("number")
    assert type(task).__name__ == "NumberTask" and task.metric == "accuracy"
    X, y = task.examples(_feats_table(), ["layer_0"])
    assert X.shape == (1, 2, 2) and list(y) == ["Sing", "Plur"]


def _feats_table():
    import pyarrow as pa

    vectors = pa.array(np.array([1, 1, 0, 0, 1, 1], np.float16))
    return pa.table({"feats": ["Number=Sing", "_", "Case=Nom|Number=Plur"],
                     "layer_0": pa.FixedSizeListArray.from_arrays(vectors, 2)})


def test_each_task_has_its_own_grid_of_languages(tmp_path, tiny_series):
    """The paper's grid is per task: POS in-language in more languages than it crosses; a task's grid is
    validated against the data, and `xlp validate` prints it."""
    from xlp.config import load_spec
    from xlp.run.plan import make_plan

    spec = dict(name="g", output=str(tmp_path / "run"), checkpoints=[{"path": f"{tiny_series}/step_*"}],
                data={"ud_root": str(UD), "languages": ["en", "de", "vi"], "max_train_sentences": 20,
                      "max_test_sentences": 10},
                tasks=["pos", "deprel"], layers=[1],
                task_grid={"pos": {"sources": ["en", "de"], "targets": ["en", "de"]}})
    plan = make_plan(load_spec(write_spec(tmp_path / "g.yaml", **spec)))
    pos = {u.src: [t for t, _ in u.targets] for u in plan.probe if u.task == "pos" and u.ckpt.step == 0}
    deprel = {u.src: [t for t, _ in u.targets] for u in plan.probe if u.task == "deprel" and u.ckpt.step == 0}
    assert pos == {"en": ["en", "de"], "de": ["en", "de"], "vi": ["vi"]}  # vi: in-language only
    assert deprel == {s: ["en", "de", "vi"] for s in ("en", "de", "vi")}  # the default: every pair
    r = run_xlp("validate", tmp_path / "g.yaml")
    assert r.returncode == 0 and "in-language 3 (en, de, vi); cross-lingual 2 x 2" in r.stdout
    # per checkpoint: parameters and weights, read off the safetensors headers
    params, nbytes, dtype = weight_sizes(Checkpoint(0, str(tiny_series / "step_0")))
    assert dtype == "F32" and nbytes == 4 * params and f"{params / 1e6:,.1f} M parameters" in r.stdout
    bad = write_spec(tmp_path / "b.yaml", **{**spec, "task_grid": {"pos": {"sources": ["fr"]}}})
    r = run_xlp("validate", bad, "--schema-only")
    assert r.returncode == 1 and "key `task_grid.pos.sources`: ['fr'] not in data.languages" in r.stderr


def test_bootstrap_seeds_measure_probe_training_variance(tmp_path, tiny_series, ray_local):
    """`probe.resample: bootstrap`: each seed fits on its own resample of the training sentences, so the
    seeds differ; the default fits once on all of them and repeats the row (seed_invariant)."""
    import pyarrow.parquet as pq

    from xlp.config import load_spec
    from xlp.run.driver import launch

    runs = {}
    for resample in ("none", "bootstrap"):
        spec = load_spec(write_spec(
            tmp_path / f"{resample}.yaml", name=resample, output=str(tmp_path / resample),
            checkpoints=[{"path": f"{tiny_series}/step_0"}],
            data={"ud_root": str(UD), "languages": ["en"], "max_train_sentences": 40, "max_test_sentences": 30},
            tasks=["pos", "arc"], layers=[1, 2], cross_lingual=False,
            probe={"seeds": [0, 1, 2], "resample": resample}))
        res = launch(spec, quiet=True)
        assert not res.failed and res.probed == 2, res.failed  # pos and arc each fit once
        runs[resample] = pq.read_table(tmp_path / resample / "results" / "probes.parquet").to_pandas()
    none, boot = runs["none"], runs["bootstrap"]
    for rows in (none, boot):  # per task: 2 layers x 3 seeds, en -> en
        assert rows.groupby("task").size().to_dict() == {"pos": 6, "arc": 6}
    pos_none, pos_boot = none[none.task == "pos"], boot[boot.task == "pos"]
    assert pos_none.groupby("layer").value.nunique().eq(1).all() and pos_none.seed_invariant.all()
    assert pos_boot.groupby("layer").value.nunique().gt(1).all() and not pos_boot.seed_invariant.any()
    assert boot[boot.task == "arc"].groupby("layer").value.nunique().gt(1).all()  # pairs stay within sentences


def test_status_and_report_count_the_same_busy_time(tmp_path):
    """Stage time is the wall-clock time in which any unit ran, in `xlp status` and in the report alike, so a
    relaunch's gap is counted by neither (a span from first start to last end would count it)."""
    import time

    from xlp.run.ledger import Ledger
    from xlp.run.reduce import _timings
    from xlp.run.status import run_status
    from xlp.storage import Store

    store = Store(str(tmp_path / "run"))
    plan = {"summary": {}, "units": {"extract": {"a": "h", "b": "h"}, "probe": {}}}
    store.write_bytes("plan.json", json.dumps(plan).encode())
    for rel in ("features/a.parquet", "features/b.parquet"):
        store.write_bytes(rel, b"x" * 10)
    ledger = Ledger(store)
    now = time.time()
    ledger.record("extract", "a", "h", "features/a.parquet", 10, seconds=2.0, rows=100)
    ledger.record("extract", "b", "h", "features/b.parquet", 10, seconds=2.0, rows=100)
    for key, finished in (("a", now - 100), ("b", now)):  # the second unit ran 100 s after the first (a relaunch)
        rec = json.loads(store.read_bytes(f"ledger/extract/{key}.json"))
        store.write_bytes(f"ledger/extract/{key}.json", json.dumps({**rec, "finished": finished}).encode())
    ledger = Ledger(store)
    assert "4.0 s busy" in _timings(ledger, plan)["extract"]
    assert run_status(str(tmp_path / "run"))["stages"]["extract"]["rows_per_s"] == 200 / 4.0


def test_identical_checkpoints_are_probed_once(tmp_path, tiny_series, ray_local):
    """Two checkpoints with identical files (a hub serving one set of weights under two branch names) are
    named at plan time, probed once, and the later step repeats the earlier one's rows."""
    import shutil

    from xlp.config import load_spec
    from xlp.run.driver import launch

    for src, name in (("step_0", "step_0"), ("step_0", "step_50"), ("step_200", "step_200")):
        shutil.copytree(tiny_series / src, tmp_path / "s" / name)
    spec = load_spec(write_spec(
        tmp_path / "d.yaml", name="d", output=str(tmp_path / "run"), checkpoints=[{"path": f"{tmp_path}/s/step_*"}],
        data={"ud_root": str(UD), "languages": ["en"], "max_train_sentences": 30, "max_test_sentences": 20},
        tasks=["pos"], layers=[1]))
    res = launch(spec, quiet=True)
    assert {u.ckpt.step for u in res.plan.extract} == {0, 200}
    # the disk estimate counts the words of the units that are extracted (32 wide, float16), not the twin's
    assert res.plan.feature_bytes == res.plan.words * 1 * 32 * 2
    assert any("step 50" in n and "identical to step 0" in n for n in res.plan.notes)
    probes = pd.read_parquet(tmp_path / "run" / "results" / "probes.parquet")
    assert sorted(set(probes.step)) == [0, 50, 200]
    by_step = probes.set_index("step")
    assert by_step.loc[50, "value"] == by_step.loc[0, "value"]
    assert by_step.loc[50, "checkpoint"].endswith("step_50")
    assert "identical to step 0" in (tmp_path / "run" / "report" / "index.html").read_text()


def test_cluster_recipes_parse():
    """The Slurm script is valid bash and submits through `xlp launch --submit`; the KubeRay manifest is a
    RayJob whose entrypoint is `xlp launch` (tests/test_slurm.py runs the Slurm one on a real one-node Slurm;
    no Kubernetes here)."""
    import yaml

    root = Path(__file__).resolve().parents[1] / "examples"
    script = root / "slurm" / "xlp.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "xlp launch \"$spec\" --submit" in script.read_text()
    job = yaml.safe_load((root / "kuberay" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("xlp launch ")
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"][
        "limits"]["nvidia.com/gpu"]

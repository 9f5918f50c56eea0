"""Checkpoint series: steps from names or metadata, local globs, hub revisions from an offline cache."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_xlmr, write_spec

from xlp.config import CheckpointSpec
from xlp.errors import XlpError
from xlp.models.series import parse_step_name, resolve_checkpoints, step_of


def test_steps_from_names_and_metadata(tmp_path):
    for name in ("step_1000", "checkpoint-20", "ckpt300"):
        (tmp_path / name).mkdir()
    assert [step_of(tmp_path / n) for n in ("step_1000", "checkpoint-20", "ckpt300")] == [1000, 20, 300]
    meta = tmp_path / "final"
    meta.mkdir()
    (meta / "trainer_state.json").write_text(json.dumps({"global_step": 777}))
    assert step_of(meta) == 777


# every naming scheme public series use: (name, step, tokens seen, the number is a checkpoint index)
HUB_NAMES = [
    ("step0", 0, None, False), ("step143000", 143000, None, False),  # Pythia, PolyPythias
    ("global_step1000", 1000, None, False),  # BLOOM intermediate checkpoints (DeepSpeed)
    ("step1000-tokens4B", 1000, 4 * 10**9, False), ("step20-tokens41M", 20, 41 * 10**6, False),  # OLMo
    ("stage1-step140000-tokens588B", 140000, 588 * 10**9, False),  # OLMo 2
    ("step-125000", 125000, None, False),  # SmolLM2
    ("step_1000", 1000, None, False), ("seed_0-step_20k", 20000, None, False),  # xlp, MultiBERTs
    ("checkpoint-20", 20, None, False),  # HF Trainer
    ("ckpt_000", 0, None, True), ("ckpt_359", 359, None, True),  # LLM360 Amber: an index
]


@pytest.mark.parametrize(("name", "step", "tokens", "index"), HUB_NAMES)
def test_step_and_tokens_from_every_naming_scheme(name, step, tokens, index):
    named = parse_step_name(name)
    assert (named.step, named.tokens, named.is_index) == (step, tokens, index)


def test_names_without_a_step_are_not_read_as_one():
    assert [parse_step_name(n) for n in ("main", "stepwise", "final", "v2")] == [None] * 4


def test_hub_revisions_and_folders_of_every_scheme_resolve_with_steps_and_tokens(tmp_path, monkeypatch):
    """The same names as hub branches (read from the offline cache) and as local folders give the same
    steps, tokens and index flags; a series is ordered by step."""
    refs = tmp_path / "hub" / "models--xlp-test--olmo" / "refs"
    refs.mkdir(parents=True)
    names = ("step2000-tokens8B", "step1000-tokens4B", "stage1-step3000-tokens12B", "main")
    for rev in names:
        (refs / rev).write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = resolve_checkpoints([CheckpointSpec(repo="xlp-test/olmo", revisions="all")])
    assert [(c.step, c.tokens, c.revision) for c in hub] == [
        (1000, 4 * 10**9, "step1000-tokens4B"), (2000, 8 * 10**9, "step2000-tokens8B"),
        (3000, 12 * 10**9, "stage1-step3000-tokens12B")]
    for scheme in (["step1000-tokens4B", "step2000-tokens8B"], ["global_step1000", "global_step2000"],
                   ["step-1000", "step-2000"], ["ckpt_1000", "ckpt_2000"], ["step1000", "step2000"]):
        root = tmp_path / scheme[0]
        for name in reversed(scheme):
            (root / name).mkdir(parents=True)
            (root / name / "config.json").write_text("{}")
        local = resolve_checkpoints([CheckpointSpec(path=f"{root}/*")])
        assert [c.step for c in local] == [1000, 2000]
        assert [(c.tokens, c.step_is_index) for c in local] == [
            (parse_step_name(n).tokens, parse_step_name(n).is_index) for n in scheme]
    with pytest.raises(XlpError, match="cannot derive a step from revision 'main'"):
        resolve_checkpoints([CheckpointSpec(repo="xlp-test/olmo", revisions=["main"])])


def test_tokens_seen_from_a_trainers_state(tmp_path):
    d = tmp_path / "final"
    d.mkdir()
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 500, "num_input_tokens_seen": 1024000}))
    (d / "config.json").write_text("{}")
    [c] = resolve_checkpoints([CheckpointSpec(path=str(d))])
    assert (c.step, c.tokens) == (500, 1024000)
    # a folder whose name gives the step (a Trainer's checkpoint-500, xlp's step_0) takes the tokens seen from
    # its metadata; a name that gives both keeps its own; a Trainer that did not count writes 0 (unknown)
    trainer, own = ("global_step", "num_input_tokens_seen"), ("step", "tokens")
    for name, keys, meta, expected in (("checkpoint-500", trainer, (500, 1024000), (500, 1024000)),
                                       ("checkpoint-600", trainer, (600, 0), (600, None)),
                                       ("step_0", own, (0, 0), (0, 0)),
                                       ("step1000-tokens4B", own, (1000, 0), (1000, 4 * 10**9))):
        d = tmp_path / name
        d.mkdir()
        file = "trainer_state.json" if keys == trainer else "xlp_checkpoint.json"
        (d / file).write_text(json.dumps(dict(zip(keys, meta))))
        (d / "config.json").write_text("{}")
        [c] = resolve_checkpoints([CheckpointSpec(path=str(d))])
        assert (c.step, c.tokens) == expected, name


def test_glob_is_sorted_by_step_and_duplicates_refused(tiny_series, tmp_path):
    ckpts = resolve_checkpoints([CheckpointSpec(path=f"{tiny_series}/step_*")])
    assert [c.step for c in ckpts] == [0, 100, 200]
    with pytest.raises(XlpError, match="two checkpoints have step 100"):
        resolve_checkpoints([CheckpointSpec(path=f"{tiny_series}/step_*"),
                             CheckpointSpec(path=str(tiny_series / "step_0"), step=100)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(XlpError, match="not a Hugging Face model directory"):
        resolve_checkpoints([CheckpointSpec(path=str(tmp_path / "empty"), step=1)])


def test_hub_revisions_load_offline_from_the_cache(tmp_path):
    """A Pythia-style repo with revisions step100 and step200, served from a populated HF cache
    with HF_HUB_OFFLINE=1: validate resolves steps and loads each revision's config."""
    cache = tmp_path / "hub"
    repo = cache / "models--xlp-test--tiny"
    for i, rev in enumerate(("step100", "step200")):
        commit = f"{i + 1:040x}"
        make_tiny_xlmr(repo / "snapshots" / commit, seed=i)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / rev).write_text(commit)
    spec = write_spec(tmp_path / "hub.yaml", name="hub", output=str(tmp_path / "run"),
                      checkpoints=[{"repo": "xlp-test/tiny", "revisions": ["step100", "step200"]}],
                      data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en"], "max_train_sentences": 5,
                            "max_test_sentences": 5}, tasks=["pos"], layers=[1])
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", "from xlp.cli import main; main()", "validate", str(spec)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "100, 200" in r.stdout
    shutil.rmtree(repo / "snapshots" / f"{2:040x}")
    r = subprocess.run([sys.executable, "-c", "from xlp.cli import main; main()", "validate", str(spec)],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "xlp-test/tiny@step200" in r.stderr and "Traceback" not in r.stderr


def test_hub_revisions_all_or_a_pattern_come_from_the_cache_offline(tmp_path, monkeypatch):
    refs = tmp_path / "hub" / "models--xlp-test--tiny" / "refs"
    refs.mkdir(parents=True)
    for rev in ("main", "step100", "step200", "step1000"):
        (refs / rev).write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    every = resolve_checkpoints([CheckpointSpec(repo="xlp-test/tiny", revisions="all")])
    assert [(c.step, c.revision) for c in every] == [(100, "step100"), (200, "step200"), (1000, "step1000")]
    some = resolve_checkpoints([CheckpointSpec(repo="xlp-test/tiny", revisions="step1*")])
    assert [c.step for c in some] == [100, 1000]
    with pytest.raises(XlpError, match=r"no branch of xlp-test/tiny matches 'v2-\*'"):
        resolve_checkpoints([CheckpointSpec(repo="xlp-test/tiny", revisions="v2-*")])


def test_series_with_two_tokenizers_is_refused_unless_allowed(tiny_series, tmp_path):
    from conftest import MINILM

    from xlp.config import load_spec
    from xlp.run.plan import make_plan

    other = tmp_path / "step_300"
    shutil.copytree(tiny_series / "step_200", other)
    shutil.copy(MINILM / "tokenizer.json", other / "tokenizer.json")
    spec = dict(name="mix", output=str(tmp_path / "run"),
                checkpoints=[{"path": f"{tiny_series}/step_*"}, {"path": str(other)}],
                data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en"], "max_train_sentences": 5,
                      "max_test_sentences": 5}, tasks=["pos"], layers=[1])
    with pytest.raises(XlpError, match="different tokenizers"):
        make_plan(load_spec(write_spec(tmp_path / "a.yaml", **spec)))
    plan = make_plan(load_spec(write_spec(tmp_path / "b.yaml", **spec, allow_tokenizer_mismatch=True)))
    assert [c.step for c in plan.checkpoints] == [0, 100, 200, 300]


def test_hub_revision_steps_come_from_step_names_or_the_spec():
    ckpts = resolve_checkpoints([CheckpointSpec(repo="org/m", revisions=["v2-step1000", "checkpoint-20"])])
    assert [c.step for c in ckpts] == [20, 1000]
    with pytest.raises(XlpError, match="cannot derive a step from revision '3f2a9c1e'"):
        resolve_checkpoints([CheckpointSpec(repo="org/m", revisions=["3f2a9c1e"])])
    assert resolve_checkpoints([CheckpointSpec(repo="org/m", revisions=["3f2a9c1e"], step=7)])[0].step == 7


@pytest.mark.parametrize("damage, message", [
    ("no_config", "is not a Hugging Face model directory (no config.json)"),
    ("bad_config", "cannot load its config"),
    ("no_weights", "no weights (expected model.safetensors)"),
    ("pickle_weights", "weights are pickle-based (pytorch_model.bin)"),
    ("truncated_weights", "model.safetensors is corrupt or truncated"),
])
def test_broken_checkpoints_are_refused_before_anything_runs(tiny_series, tmp_path, damage, message):
    from conftest import run_xlp

    ckpt = tmp_path / "step_5"
    shutil.copytree(tiny_series / "step_0", ckpt)
    weights = ckpt / "model.safetensors"
    if damage == "no_config":
        (ckpt / "config.json").unlink()
    elif damage == "bad_config":
        (ckpt / "config.json").write_text('{"model_type": "xlm-roberta", ')
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "pickle_weights":
        weights.rename(ckpt / "pytorch_model.bin")
    else:
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    spec = write_spec(tmp_path / "s.yaml", name="broken", output=str(tmp_path / "run"),
                      checkpoints=[{"path": str(ckpt)}], data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en"]},
                      tasks=["pos"], layers=[1])
    r = run_xlp("validate", spec)
    assert r.returncode == 1 and message in r.stderr and str(ckpt) in r.stderr.replace("\n", "")
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_one_repository_per_checkpoint_from_a_pattern():
    """MultiBERTs publish each checkpoint as its own repository (`google/multiberts-seed_0-step_20k`): a repo
    pattern with {step} and the step names give the series, each at its main revision."""
    spec = CheckpointSpec(repo="google/multiberts-seed_0-step_{step}", steps=["20k", "0k", "2000k"])
    series = resolve_checkpoints([spec])
    assert [(c.step, c.location, c.revision) for c in series] == [
        (0, "google/multiberts-seed_0-step_0k", "main"), (20000, "google/multiberts-seed_0-step_20k", "main"),
        (2000000, "google/multiberts-seed_0-step_2000k", "main")]
    with pytest.raises(ValueError, match="needs `steps`"):
        CheckpointSpec(repo="google/multiberts-seed_0-step_{step}", revisions=["main"])


def test_the_pythia_example_plans_its_series_from_the_hub_cache(tmp_path):
    """examples/pythia.yaml as written, its revisions served from a hub cache offline (tiny random GPT-NeoX
    models with the real GPT-NeoX tokenizer under Pythia's branch names): validate resolves every step, reads
    each word off its last subword, and plans POS, deprel and bpc."""
    import yaml
    from conftest import make_tiny_family

    example = Path(__file__).resolve().parents[1] / "examples" / "pythia.yaml"
    revisions = yaml.safe_load(example.read_text())["checkpoints"][0]["revisions"]
    repo = tmp_path / "hub" / "models--EleutherAI--pythia-160m"
    for i, rev in enumerate(revisions):
        commit = f"{i + 1:040x}"
        make_tiny_family("gpt_neox", repo / "snapshots" / commit, seed=i, layers=2, hidden=16)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / rev).write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    r = subprocess.run([sys.executable, "-c", "from xlp.cli import main; main()", "validate", str(example)],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    steps = ", ".join(rev.removeprefix("step") for rev in revisions)
    assert steps in r.stdout and "task bpc" in r.stdout and "cross-lingual 3 x 3" in r.stdout
    assert "weights not on this machine" not in r.stdout  # sizes read from the cached snapshots
    assert not (tmp_path / "runs").exists()  # validate writes nothing

import json
import re
import subprocess
import sys

import pytest
from conftest import MINILM, UD, run_xlp, write_spec

from xlp.config import load_spec
from xlp.errors import XlpError
from xlp.run.manifest import load_manifest


def _spec(tmp_path, **over):
    spec = dict(name="t", output=str(tmp_path / "run"),
                checkpoints=[{"path": str(MINILM), "step": 0}],
                data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en"]}, tasks=["pos"], layers=[1])
    spec.update(over)
    return write_spec(tmp_path / "spec.yaml", **spec)


def test_env_expansion_and_defaults(tmp_path):
    s = load_spec(_spec(tmp_path))
    assert s.data.ud_root == str(UD)
    assert s.pooling == "auto" and s.probe.seeds == [0] and s.cross_lingual


def test_unknown_key_names_key_file_and_line(tmp_path):
    path = _spec(tmp_path, probe={"seeds": [0], "l3": 0.1})
    with pytest.raises(XlpError) as e:
        load_spec(path)
    msg = str(e.value)
    assert "probe.l3" in msg and str(path) in msg and "unknown key" in msg
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "l3" in text)
    assert f"{path}:{line}:" in msg


def test_wrong_type_and_bad_values(tmp_path):
    with pytest.raises(XlpError, match="key `layers"):
        load_spec(_spec(tmp_path, layers="most"))
    with pytest.raises(XlpError, match="key `tasks.0`: unknown task 'nope'"):
        load_manifest(_spec(tmp_path, tasks=["nope"]))
    with pytest.raises(XlpError, match="name"):
        load_spec(_spec(tmp_path, name="../escape"))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", "from xlp.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_cli_bad_spec_exits_nonzero_without_traceback(tmp_path):
    path = _spec(tmp_path, colour="blue")
    r = _cli("validate", str(path))
    assert r.returncode != 0
    assert "colour" in r.stderr and str(path) in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_cli_malformed_conllu_exits_nonzero_naming_file_and_line(tmp_path):
    tb = tmp_path / "ud" / "UD_Xx-Bad"
    tb.mkdir(parents=True)
    good = "1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n\n"
    (tb / "xx_bad-ud-dev.conllu").write_text(good)
    (tb / "xx_bad-ud-test.conllu").write_text(good + "1\tHi\thi\tINTJ\t_\t_\t0\troot\n\n")
    path = _spec(tmp_path, data={"ud_root": str(tmp_path / "ud"), "languages": ["xx"]})
    r = run_xlp("launch", path, "--quiet")
    assert r.returncode == 1
    assert f"{tb / 'xx_bad-ud-test.conllu'}:3" in r.stderr.replace("\n", "")
    assert "Traceback" not in r.stderr + r.stdout


XNLI_LANGUAGES = ["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]


def test_cluster_yaml_is_the_papers_grid(tmp_path, monkeypatch):
    """cluster.yaml, with its /data paths pointed at a small stand-in of the same layout (a UD release
    with several treebanks for English, six gold alignment pairs, a checkpoint series) and its hub datasets
    at stand-ins in the hub cache's layout (facebook/xnli, FLORES+, MTEB's Tatoeba; offline), plans the
    paper's grid: 44 languages in-language and 18 x 18 across for POS, arcs and relations, BPC in 91 of the
    paper's 94, XNLI in all 15 of its languages, word alignment from English to 6, Tatoeba retrieval in 36."""
    import shutil
    from pathlib import Path

    import yaml
    from conftest import SHARED, hub_repo, make_tiny_xlmr

    from xlp.data.published import FLORES_PLUS, TATOEBA
    from xlp.run.plan import make_plan
    from xlp.run.units import ProbeUnit, SentenceUnit

    raw = yaml.safe_load((Path(__file__).parents[1] / "cluster.yaml").read_text())
    sample = (UD / "UD_English-EWT" / "en_ewt-ud-test.conllu").read_text().split("\n\n")[:6]
    ud = tmp_path / "ud-treebanks-v2.8"
    for lang, tb in [*raw["data"]["treebanks"].items(), ("en", "UD_English-GUM")]:  # GUM: a second English one
        folder = ud / tb
        folder.mkdir(parents=True)
        for split in ("train", "test"):
            (folder / f"{lang}_{tb.split('-')[1].lower()}-ud-{split}.conllu").write_text("\n\n".join(sample) + "\n\n")
    cache = tmp_path / "hub"
    pairs = {"premise": [f"A man plays a guitar {i}." for i in range(6)],
             "hypothesis": [f"Someone makes music {i}." for i in range(6)], "label": [0, 1, 2] * 2}
    hub_repo(cache, "facebook/xnli", "1" * 40, {lang: {"validation": pairs, "test": pairs}
                                                for lang in [*XNLI_LANGUAGES, "all_languages"]})
    text = {"text": ["One sentence.", "Another one."]}
    hub_repo(cache, "openlanguagedata/flores_plus", "2" * 40, {c: {"dev": text, "devtest": text}
                                                               for c in FLORES_PLUS.values()})
    hub_repo(cache, "mteb/tatoeba-bitext-mining", "3" * 40, {c: {"test": {"sentence1": ["Eins.", "Zwei."],
                                                                          "sentence2": ["One.", "Two."]}}
                                                             for c in TATOEBA.values()})
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    gold = tmp_path / "alignment"
    gold.mkdir()
    for pair in raw["align"]["pairs"]:
        for ext in ("src-tgt", "gold"):
            shutil.copy(SHARED / "alignment" / f"enfr.{ext}", gold / f"{pair}.{ext}")
    for step in (5000, 10000):
        make_tiny_xlmr(tmp_path / "xlmr-replica" / f"checkpoint_{step}", seed=step)
    text = (Path(__file__).parents[1] / "cluster.yaml").read_text().replace("/data/", f"{tmp_path}/")
    text = text.replace("s3://my-bucket/xlp/xlmr-replica", str(tmp_path / "run"))
    spec_path = tmp_path / "cluster.yaml"
    spec_path.write_text(text)

    monkeypatch.setenv("COLUMNS", "600")  # one table row a line
    r = run_xlp("validate", spec_path)
    assert r.returncode == 0, r.stderr
    grid = {m[0]: m[1].strip() for m in re.findall(r"task (\w+)\W+\d+ units\W+(.*?)│", r.stdout)}
    assert [grid[t].split("; ")[1] for t in ("pos", "arc", "deprel", "bpc", "xnli")] == \
        ["cross-lingual 18 x 18"] * 3 + ["no cross-lingual pairs", "cross-lingual 15 x 15"]
    assert grid["bpc"].startswith("in-language 91 (af, am,") and grid["retrieval"].startswith("36 languages to and")
    assert grid["pos"].startswith("in-language 44 (af, ar,") and grid["align"].startswith("6 language pairs")
    plan = make_plan(load_spec(spec_path))
    langs, cross = raw["data"]["languages"], raw["task_grid"]["pos"]["sources"]
    assert len(langs) == 44 and len(cross) == 18 and set(cross) <= set(langs)
    assert [c.step for c in plan.checkpoints] == [5000, 10000]
    for task in ("pos", "arc", "deprel"):
        units = [u for u in plan.probe if isinstance(u, ProbeUnit) and task in u.task.split("+")
                 and u.ckpt.step == 5000]
        targets = {u.src: {t for t, _ in u.targets} for u in units}
        assert sorted(targets) == sorted(langs), task
        assert all(targets[s] == (set(cross) if s in cross else {s}) for s in langs), task
        assert sum(len(t) for t in targets.values()) == 18 * 18 + (44 - 18)
    sentence = {u.task: u for u in plan.probe if isinstance(u, SentenceUnit) and u.ckpt.step == 5000}
    assert sorted(sentence["bpc"].langs) == sorted(FLORES_PLUS)
    assert sorted(sentence["xnli"].langs) == XNLI_LANGUAGES
    assert sorted(sentence["retrieval"].langs) == sorted(TATOEBA) and sentence["retrieval"].inputs.corpus == "tatoeba"
    assert sentence["align"].langs == ("encs", "ende", "enfa", "enfr", "enhi", "enro")


def test_task_options_are_the_tasks_own_and_older_specs_still_load(tmp_path):
    """A task's options sit under its name and are checked by its own model (file, line and key named); a spec
    written before they moved (`alignment:`, `data.xnli`) loads to the same options."""
    from xlp.tasks.align import AlignOptions

    path = _spec(tmp_path, tasks=["align"], align={"pairs": ["enfr"], "method": "maxmax"})
    with pytest.raises(XlpError) as e:
        load_manifest(path)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "maxmax" in text)
    assert f"{path}:{line}: key `align.method`" in str(e.value)
    with pytest.raises(XlpError, match="key `colour`: unknown key"):
        load_manifest(_spec(tmp_path, colour="blue"))
    old = load_manifest(_spec(tmp_path, tasks=["align", "xnli"], alignment={"pairs": ["enfr"], "method": "itermax"},
                              data={"ud_root": str(UD), "languages": ["en"], "xnli": "/x"}))
    new = load_manifest(_spec(tmp_path, tasks=["align", "xnli"], align={"pairs": ["enfr"], "method": "itermax"},
                              xnli={"path": "/x"}, data={"ud_root": str(UD), "languages": ["en"]}))
    assert old.tasks.options == new.tasks.options
    assert new.tasks.options["align"] == AlignOptions(pairs=["enfr"], method="itermax")
    path = _spec(tmp_path, tasks=["align"], alignment={"pairs": ["english"]})
    with pytest.raises(XlpError, match="key `alignment.pairs`"):  # the key as the spec wrote it
        load_manifest(path)


def test_quickstart_yaml_validates_as_the_readme_runs_it(tmp_path, monkeypatch, tiny_series):
    """examples/quickstart.yaml, the README's main command, as written: before its series exists `xlp validate`
    checks the spec and data and names the pretraining `xlp launch` will do first; once the series is there
    (a stand-in of tiny checkpoints under its step names) it plans the grid the file describes: 9 checkpoints,
    7 languages, POS and deprel in-language and 7 x 7 across, bpc in the 7, alignment for en-fr and zh-en."""
    import os
    from pathlib import Path

    import yaml

    from xlp.config import load_spec
    from xlp.run.plan import make_plan
    from xlp.run.units import SentenceUnit

    example = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"
    raw = yaml.safe_load(example.read_text())
    monkeypatch.chdir(tmp_path)  # its paths are relative: runs/ under the working directory
    monkeypatch.setenv("COLUMNS", "250")
    r = run_xlp("validate", example)
    assert r.returncode == 0, r.stderr
    steps = raw["pretrain"]["save_steps"]
    assert f"pretrains the series into runs/mini-xlmr (steps {', '.join(map(str, steps))})" in r.stdout
    assert "spec and data are valid" in r.stdout and not (tmp_path / "runs").exists()  # validate writes nothing

    for i, step in enumerate(steps):  # the series as `xlp pretrain` leaves it: step_<N>/ with its metadata
        folder = tmp_path / "runs" / "mini-xlmr" / f"step_{step}"
        folder.mkdir(parents=True)
        source = tiny_series / f"step_{(0, 100, 200)[i % 3]}"
        for f in source.iterdir():
            os.symlink(f, folder / f.name)
        (folder / "xlp_checkpoint.json").write_text(json.dumps({"step": step}))
    r = run_xlp("validate", example)
    assert r.returncode == 0, r.stderr
    langs = raw["data"]["languages"]
    grid = {m[0]: m[1].strip() for m in re.findall(r"task (\w+)\W+\d+ units\W+(.*?)│", r.stdout)}
    assert sorted(grid) == sorted(raw["tasks"]) == ["align", "bpc", "deprel", "pos"]
    assert grid["pos"] == grid["deprel"] == f"in-language 7 ({', '.join(langs)}); cross-lingual 7 x 7"
    assert grid["align"].startswith("2 language pairs")
    assert re.search(r"checkpoints\W+9\W+" + ", ".join(map(str, steps)), r.stdout)
    plan = make_plan(load_spec(example))
    assert [c.step for c in plan.checkpoints] == steps and plan.layers == [0, 1, 2]
    sentence = {u.task: u for u in plan.probe if isinstance(u, SentenceUnit) and u.ckpt.step == 0}
    assert sorted(sentence["bpc"].langs) == sorted(langs) and sentence["align"].langs == ("enfr", "zhen")

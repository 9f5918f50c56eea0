"""XNLI, bpc text and Tatoeba retrieval read through `datasets`: from a dataset in the hub's own cache layout
(offline) and from a local copy of a dataset repository, giving the numbers today's files give on the same
sentences; a new revision of one dataset redoes exactly the units that read it."""

import csv
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SHARED, UD, run_xlp, write_spec

from xlp.data.conllu import read_conllu
from xlp.data.published import XNLI_LABELS
from xlp.data.xnli import read_xnli_file
from xlp.tasks.retrieval import parallel_udhr

LANGS = ["en", "de"]
CAPS = {"max_train_sentences": 30, "max_test_sentences": 18}
RETRIEVAL = {"max_sentences": 15}


def write_repo(root, configs: dict[str, dict[str, dict[str, list]]]) -> None:
    """A dataset repository as the hub publishes one: `<config>/<split>-00000-of-00001.parquet` and a README
    whose YAML header lists each config's files."""
    card = []
    for config, splits in configs.items():
        for split, columns in splits.items():
            (root / config).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(columns), root / config / f"{split}-00000-of-00001.parquet")
        card.append({"config_name": config, "data_files": [{"split": s, "path": f"{config}/{s}-*"} for s in splits]})
    (root / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': card})}---\n# a test dataset\n")


def hub_repo(cache, repo: str, commit: str, configs) -> None:
    """The same repository in the hub cache's layout: datasets--org--name/snapshots/<commit>/..., refs/main."""
    root = cache / f"datasets--{repo.replace('/', '--')}"
    write_repo(root / "snapshots" / commit, configs)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)


def inputs(tmp):
    """Today's files (XNLI-1.0 TSVs, <lang>.txt, the UDHR TSV) and the same sentences in the published layouts
    of facebook/xnli, FLORES+ and Tatoeba (mteb/tatoeba-bitext-mining), as {repo: configs}."""
    files = tmp / "files"
    (files / "xnli").mkdir(parents=True)
    (files / "text").mkdir()
    xnli, flores, tatoeba = {}, {}, {}
    for lang in LANGS:
        texts = [s.text for s in read_conllu(next(UD.glob(f"*/{lang}_pud-ud-test.conllu")), 120)
                 if s.text and not set(s.text) & set('"\t\\')]  # as XNLI's TSVs: no quoting, no escapes
        flores[{"en": "eng_Latn", "de": "deu_Latn"}[lang]] = {"devtest": {"id": list(range(20)), "text": texts[:20]}}
        (files / "text" / f"{lang}.txt").write_text("\n".join(texts[:20]) + "\n", encoding="utf-8")
        for split, chunk in (("validation", texts[:40]), ("test", texts[40:70])):
            labels = [i % 3 for i in range(len(chunk))]
            hypo = [p if y == 0 else p + " " + " ".join(chunk[i - 1].split()[:3]) if y == 1 else chunk[i - 1]
                    for i, (p, y) in enumerate(zip(chunk, labels))]
            xnli.setdefault(lang, {})[split] = {"premise": chunk, "hypothesis": hypo, "label": labels}
    for tsv, split in (("dev", "validation"), ("test", "test")):
        with open(files / "xnli" / f"xnli.{tsv}.tsv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            w.writerow(["language", "gold_label", "sentence1", "sentence2"])
            for lang in LANGS:
                c = xnli[lang][split]
                w.writerows([lang, XNLI_LABELS[y], p, h] for p, h, y in zip(c["premise"], c["hypothesis"], c["label"]))
    udhr = parallel_udhr(SHARED / "udhr" / "udhr.tsv", ["en", "de", "fr"], RETRIEVAL["max_sentences"])
    for lang, config in (("de", "deu-eng"), ("fr", "fra-eng")):
        tatoeba[config] = {"test": {"sentence1": udhr[lang], "sentence2": udhr["en"]}}
    return files, {"xlp-test/xnli": xnli, "xlp-test/flores": flores, "xlp-test/tatoeba": tatoeba}


def spec(tmp, name, ckpt, xnli, bpc, retrieval):
    return write_spec(tmp / f"{name}.yaml", name=name, output=str(tmp / name), checkpoints=[ckpt],
                      data={"ud_root": "${XLP_SHARED}/ud", "languages": LANGS, **CAPS},
                      tasks=["xnli", "bpc", "retrieval"], layers="all", probe={"seeds": [0]},
                      task_grid={"bpc": {"languages": LANGS}, "retrieval": {"languages": ["en", "de", "fr"]}},
                      xnli=xnli, bpc=bpc, retrieval={**RETRIEVAL, **retrieval})


def rows(run):
    df = pd.read_parquet(run / "results" / "probes.parquet")
    df = df[(df.src_lang != df.tgt_lang) | (df.task != "retrieval")]
    return df.set_index(["task", "layer", "src_lang", "tgt_lang"]).sort_index()


def same_numbers(a, b):
    """b's rows (Tatoeba: each language with English) have a's values, test items and per-item scores."""
    a = a.loc[b.index]
    assert len(b) == 3 * 4 + 3 * 4 + 2  # 3 layers of xnli's 2 x 2 pairs and of de/fr <-> en; bpc: 2, last layer
    assert (a.n_test == b.n_test).all() and (a.n_train == b.n_train).all()
    assert np.allclose(a.value, b.value, rtol=1e-9, atol=0)
    assert (a.correct.fillna(b"") == b.correct.fillna(b"")).all() and (a.item_sums.fillna(b"") ==
                                                                      b.item_sums.fillna(b"")).all()


def test_hub_cache_and_a_local_copy_give_the_numbers_of_todays_files(tmp_path, tiny_series, ray_local, monkeypatch):
    ckpt = {"path": str(tiny_series / "step_100"), "step": 100}
    files, repos = inputs(tmp_path)
    r = run_xlp("launch", spec(tmp_path, "files", ckpt, {"path": str(files / "xnli")}, {"text": str(files / "text")},
                               {"corpus": "udhr"}), "--quiet")
    assert r.returncode == 0, r.stderr
    reference = rows(tmp_path / "files")

    cache = tmp_path / "hub"
    for i, (repo, configs) in enumerate(repos.items()):
        hub_repo(cache, repo, f"{i + 1:040x}", configs)
        write_repo(tmp_path / "copies" / repo, configs)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)

    def source(repo):
        return {"hub": repo}

    hub = spec(tmp_path, "hub", ckpt, {"dataset": source("xlp-test/xnli")}, {"dataset": source("xlp-test/flores")},
               {"corpus": "tatoeba", "dataset": source("xlp-test/tatoeba")})
    r = run_xlp("launch", hub, "--quiet")
    assert r.returncode == 0, r.stderr
    same_numbers(reference, rows(tmp_path / "hub"))

    folder = spec(tmp_path, "folder", ckpt, {"dataset": {"folder": str(tmp_path / "copies/xlp-test/xnli")}},
                  {"dataset": {"folder": str(tmp_path / "copies/xlp-test/flores")}},
                  {"corpus": "tatoeba", "dataset": {"folder": str(tmp_path / "copies/xlp-test/tatoeba")}})
    r = run_xlp("launch", folder, "--quiet")
    assert r.returncode == 0, r.stderr
    same_numbers(reference, rows(tmp_path / "folder"))

    # new revisions: XNLI's with one test label changed, Tatoeba's with the same files; their units are redone
    changed = repos["xlp-test/xnli"]
    changed["de"]["test"]["label"][0] = 2
    hub_repo(cache, "xlp-test/xnli", f"{9:040x}", changed)
    hub_repo(cache, "xlp-test/tatoeba", f"{10:040x}", repos["xlp-test/tatoeba"])
    r = run_xlp("launch", hub, "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    plan = [e for e in events if e.get("event") == "plan"][0]
    done = sorted(e["key"] for e in events if e.get("event") == "unit")
    assert plan["probe_todo"] == 2 and done == ["step=100/task=retrieval/corpus=tatoeba",
                                                "step=100/task=xnli/corpus=xnli"], r.stdout
    again, before = rows(tmp_path / "hub"), rows(tmp_path / "folder")
    assert (again.drop("xnli").value == before.drop("xnli").value).all()
    assert np.allclose(before.loc[("xnli", 2, "de", "de")].baseline, 6 / 18)  # the majority label's share
    assert np.allclose(again.loc[("xnli", 2, "de", "de")].baseline, 7 / 18)  # the new revision's test labels

"""XNLI, bpc text and Tatoeba retrieval read through `datasets`: from a dataset in the hub's own cache layout
(offline) and from a local copy of a dataset repository, giving the numbers today's files give on the same
sentences; a new revision of one dataset redoes exactly the units that read it."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED, UD, hub_repo, run_xlp, write_repo, write_spec

from xlp.data.conllu import read_conllu
from xlp.data.published import XNLI_LABELS
from xlp.tasks.retrieval import parallel_udhr

LANGS = ["en", "de"]
CAPS = {"max_train_sentences": 30, "max_test_sentences": 18}
RETRIEVAL = {"max_sentences": 15}


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


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache, offline, as the hub library and xlp see it."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    return cache


def test_xlp_data_lists_what_a_spec_reads_and_names_what_it_cannot(tmp_path, hub_cache):
    """`xlp data xnli|text|tatoeba SPEC` resolves the spec's dataset from the cache (offline) and prints each
    file with its size and SHA-256; a dataset not cached, a language without a config and a missing column
    are errors naming the key, the dataset and what to do."""
    import hashlib

    xnli = {lang: {s: {"premise": ["a b", "c d"], "hypothesis": ["a", "d"], "label": [0, 2]}
                   for s in ("validation", "test")} for lang in LANGS}
    hub_repo(hub_cache, "xlp-test/xnli", "1" * 40, xnli)
    hub_repo(hub_cache, "xlp-test/flores", "2" * 40, {"eng_Latn": {"devtest": {"sentence": ["One.", "Two."]}}})
    base = dict(name="d", output=str(tmp_path / "run"), checkpoints=[{"path": "not/needed/step_*"}],
                data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en"]}, tasks=["xnli", "bpc"],
                task_grid={"bpc": {"languages": ["en"]}})
    path = write_spec(tmp_path / "d.yaml", **base, xnli={"dataset": {"hub": "xlp-test/xnli"}},
                      bpc={"dataset": {"hub": "xlp-test/flores", "columns": {"text": "sentence"}}})
    r = run_xlp("data", "xnli", path)
    assert r.returncode == 0, r.stderr
    test_file = hub_cache / "datasets--xlp-test--xnli/snapshots" / ("1" * 40) / "de/test-00000-of-00001.parquet"
    digest = hashlib.sha256(test_file.read_bytes()).hexdigest()
    assert f"{test_file}  {test_file.stat().st_size:,} bytes  sha256 {digest}" in r.stdout
    assert "xnli: 4 splits, 4 files" in r.stdout and f"xnli.dataset: xlp-test/xnli@main, commit {'1' * 40}" in r.stdout
    assert run_xlp("data", "text", path).returncode == 0

    def error(what, spec):
        r = run_xlp("data", what, spec)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        return " ".join(r.stderr.split())

    gone = write_spec(tmp_path / "gone.yaml", **base, xnli={"dataset": {"hub": "xlp-test/missing"}})
    assert "xnli.dataset: xlp-test/missing@main is not in the hub cache" in error("xnli", gone)
    de = write_spec(tmp_path / "de.yaml", **{**base, "task_grid": {"bpc": {"languages": ["en", "de"]}}},
                    bpc={"dataset": {"hub": "xlp-test/flores", "columns": {"text": "sentence"}}})
    assert "bpc.dataset: xlp-test/flores@main has no config 'deu_Latn' (it has eng_Latn); name one in " \
           "bpc.dataset.configs" in error("text", de)
    column = write_spec(tmp_path / "column.yaml", **base, bpc={"dataset": {"hub": "xlp-test/flores"}})
    assert "has no column text (it has sentence); name the right one in bpc.dataset.columns" in error("text", column)
    assert "retrieval.dataset is not set" in error("tatoeba", path)


def test_xlp_data_fetches_only_what_the_spec_reads_from_a_hub_then_runs_offline(tmp_path, monkeypatch):
    """Against a hub on loopback that serves a dataset's card, file tree and files as the hub does, and answers for
    a gated dataset (403, X-Error-Code GatedRepo) and a missing one (401, RepoNotFound) as the hub does:
    `xlp data xnli` fetches the card and the files of the spec's languages only, into the hub cache; offline
    afterwards it resolves the same files from the cache without a request; gated and missing datasets are errors
    that say how to get access."""
    import hashlib
    import http.server
    import threading

    repo, commit = tmp_path / "served", "c" * 40
    pairs = {"premise": ["a b", "c d"], "hypothesis": ["a", "d"], "label": [0, 2]}
    write_repo(repo, {lang: {"validation": pairs, "test": pairs} for lang in ("de", "en", "fr")})
    requests = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def answer(self):
            path = self.path.split("?")[0]
            requests.append(path)
            body, headers = b"", {}
            if path.startswith("/api/datasets/xlp-test/xnli/tree/"):
                body = json.dumps([{"type": "file", "path": str(f.relative_to(repo)), "size": f.stat().st_size,
                                    "oid": hashlib.sha1(f.read_bytes()).hexdigest()}
                                   for f in repo.rglob("*") if f.is_file()]).encode()
            elif path.startswith("/datasets/xlp-test/xnli/resolve/") and (repo / path.split("/", 6)[6]).is_file():
                body = (repo / path.split("/", 6)[6]).read_bytes()
                headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
            else:
                gated = "/gated/" in path
                headers = {"X-Error-Code": "GatedRepo" if gated else "RepoNotFound"}
            self.send_response(200 if body else 403 if headers["X-Error-Code"] == "GatedRepo" else 401)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        do_GET = do_HEAD = answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hub, cache = f"http://127.0.0.1:{server.server_port}", tmp_path / "hub"
    template = hub + "/{repo_id}/resolve/{revision}/{filename}"
    for name, value in (("ENDPOINT", hub), ("HUGGINGFACE_CO_URL_TEMPLATE", template),
                        ("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", False)):
        monkeypatch.setattr(f"huggingface_hub.constants.{name}", value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)

    def spec(task, source):
        return write_spec(tmp_path / f"{source['hub'].split('/')[1]}.yaml", name="g", output=str(tmp_path / "run"),
                          checkpoints=[{"path": "x/step_*"}], data={"ud_root": "x", "languages": ["en"]},
                          tasks=[task], task_grid={task: {"languages": ["en", "de"]}}, **{task: {"dataset": source}})

    login = "log in with `huggingface-cli login` or set HF_TOKEN"
    try:
        online = run_xlp("data", "xnli", spec("xnli", {"hub": "xlp-test/xnli"}))
        assert online.returncode == 0, online.stderr
        snapshot = cache / "datasets--xlp-test--xnli" / "snapshots" / commit
        assert sorted(str(f.relative_to(snapshot)) for f in snapshot.rglob("*") if f.is_file()) == [
            "README.md", "de/test-00000-of-00001.parquet", "de/validation-00000-of-00001.parquet",
            "en/test-00000-of-00001.parquet", "en/validation-00000-of-00001.parquet"]  # no fr
        for f in ("en/test-00000-of-00001.parquet", "de/validation-00000-of-00001.parquet"):
            assert f"sha256 {hashlib.sha256((repo / f).read_bytes()).hexdigest()}" in online.stdout
        asked = len(requests)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
        offline = run_xlp("data", "xnli", spec("xnli", {"hub": "xlp-test/xnli"}))
        assert offline.returncode == 0 and offline.stdout == online.stdout and len(requests) == asked
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        for repo_id, expected in (
                ("org/gated", f"bpc.dataset: org/gated is a gated dataset: accept its conditions on "
                              f"{hub}/datasets/org/gated and {login}"),
                ("org/none", f"bpc.dataset: no dataset org/none on the hub, or it is private ({login}); "
                             f"see {hub}/datasets/org/none")):
            r = run_xlp("data", "text", spec("bpc", {"hub": repo_id}))
            assert r.returncode == 1 and expected in " ".join(r.stderr.split()) and "Traceback" not in r.stderr
    finally:
        server.shutdown()


def test_a_folder_without_a_card_and_a_card_with_one_pattern_read_as_datasets_reads_them(tmp_path):
    """A local folder without a README holds one subfolder a config, its files named by split (`datasets`'
    data_dir convention); a card may give a config's files as one pattern (split train). JSON Lines files are
    read by `datasets`' JSON builder, as load_dataset would."""
    from xlp.data.hub import Dataset, DatasetSource, read_columns

    plain = tmp_path / "plain"
    write_repo(plain, {"en": {"test": {"text": ["a", "b", "c"]}}, "de": {"test": {"text": ["x", "y"]}}})
    (plain / "README.md").unlink()
    ds = Dataset(DatasetSource(folder=str(plain)), "bpc.dataset")
    assert ds.configs == ["de", "en"]
    part = ds.split("en", "test")
    assert part.format == "parquet" and read_columns(part, {"text": "text"}, 2, "k") == {"text": ["a", "b"]}

    card = tmp_path / "card"
    (card / "data").mkdir(parents=True)
    (card / "data" / "de.jsonl").write_text('{"sentence": "Eins."}\n{"sentence": "Zwei."}\n')
    (card / "README.md").write_text("---\nconfigs:\n- config_name: de\n  data_files: data/de.jsonl\n---\n")
    part = Dataset(DatasetSource(folder=str(card)), "bpc.dataset").split("de", "train")
    assert part.format == "json" and read_columns(part, {"text": "sentence"}, None, "k")["text"] == ["Eins.", "Zwei."]

"""`xlp data ud`: a UD-layout archive served on loopback is fetched once, verified, resumed and unpacked."""

import hashlib
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import UD, run_xlp, write_spec

from xlp.data.download import download
from xlp.data.ud_release import fetch_ud
from xlp.errors import XlpError

TREEBANKS = ("UD_English-PUD", "UD_Finnish-PUD", "UD_Vietnamese-VTB")


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with byte ranges; `cut` makes the next full response stop halfway."""

    log: list = []
    cut = {"next": False}

    def do_GET(self):
        path = self.translate_path(self.path)
        data = open(path, "rb").read()
        rng = self.headers.get("Range")
        self.log.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.cut["next"]:
            self.cut["next"] = False
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    archive = root / "ud-treebanks-v9.9.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for tb in TREEBANKS:
            tar.add(UD / tb, arcname=f"ud-treebanks-v9.9/{tb}")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/ud-treebanks-v{{version}}.tgz"
    yield url, hashlib.sha256(archive.read_bytes()).hexdigest()
    httpd.shutdown()


def test_fetch_once_then_nothing(server, tmp_path):
    url, sha = server
    RangeHandler.log.clear()
    root = fetch_ud("9.9", ["en"], tmp_path / "ud", url, sha, quiet=True)
    assert [p.name for p in root.iterdir() if p.is_dir()] == ["UD_English-PUD"]
    assert (root / "UD_English-PUD" / "en_pud-ud-test.conllu").read_bytes() == \
        (UD / "UD_English-PUD" / "en_pud-ud-test.conllu").read_bytes()
    assert RangeHandler.log == [None]
    stamp = (root / "UD_English-PUD" / "en_pud-ud-test.conllu").stat().st_mtime_ns
    fetch_ud("9.9", ["en"], tmp_path / "ud", url, sha, quiet=True)
    assert RangeHandler.log == [None]  # nothing fetched again
    assert (root / "UD_English-PUD" / "en_pud-ud-test.conllu").stat().st_mtime_ns == stamp
    fetch_ud("9.9", ["vi", "fi"], tmp_path / "ud", url, sha, quiet=True)  # the kept archive serves new languages
    assert RangeHandler.log == [None]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(TREEBANKS)


def test_interrupted_download_resumes(server, tmp_path):
    url, sha = server
    url = url.format(version="9.9")
    RangeHandler.log.clear()
    RangeHandler.cut["next"] = True
    with pytest.raises(XlpError, match="run the same command again to resume"):
        download(url, tmp_path / "a.tgz", sha, retries=0, quiet=True)
    part = tmp_path / "a.tgz.part"
    half = part.stat().st_size
    assert 0 < half and not (tmp_path / "a.tgz").exists()
    download(url, tmp_path / "a.tgz", sha, quiet=True)  # the next call continues where it stopped
    assert RangeHandler.log == [None, f"bytes={half}-"]
    assert hashlib.sha256((tmp_path / "a.tgz").read_bytes()).hexdigest() == sha
    RangeHandler.cut["next"] = True  # within one call, a dropped connection is resumed at once
    download(url, tmp_path / "b.tgz", sha, quiet=True)
    assert hashlib.sha256((tmp_path / "b.tgz").read_bytes()).hexdigest() == sha


def test_wrong_checksum_is_refused_and_nothing_is_cached(server, tmp_path):
    url, _ = server
    r = run_xlp("data", "ud", "--version", "9.9", "--languages", "en", "--dest", tmp_path / "ud",
                "--url", url, "--sha256", "0" * 64, "--quiet")
    assert r.returncode == 1 and "checksum mismatch" in r.stderr and "Traceback" not in r.stderr
    assert list((tmp_path / "ud").iterdir()) == []


def test_spec_ud_uri_fetches_into_the_cache(server, tmp_path, monkeypatch):
    url, _ = server
    monkeypatch.setenv("XLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XLP_UD_URL", url)
    spec = write_spec(tmp_path / "s.yaml", name="fetched", output=str(tmp_path / "run"),
                      checkpoints=[{"path": str(UD.parent / "models" / "all-MiniLM-L6-v2")}],
                      data={"ud_root": [str(tmp_path / "absent"), "ud://9.9"], "languages": ["vi", "fi"],
                            "max_train_sentences": 50, "max_test_sentences": 50},
                      tasks=["pos"], layers=[1])
    r = run_xlp("validate", spec)
    assert r.returncode == 0, r.stderr
    assert "fi: UD_Finnish-PUD has no train or dev split; target only" in r.stdout and "spec is valid" in r.stdout
    assert sorted(p.name for p in (tmp_path / "cache" / "ud" / "9.9").iterdir() if p.is_dir()) == \
        ["UD_Finnish-PUD", "UD_Vietnamese-VTB"]


def test_a_test_only_treebank_cut_in_two_is_a_source_too(tmp_path, tiny_series, ray_local):
    """`data.split_test` cuts Arabic's only split (its PUD test set) in two by a hash of each sentence id:
    Arabic probes train on one part, and every probe that scores Arabic (its own and English's) is scored
    on the other, the same sentences for both; the parts are disjoint and hold about the asked share; the
    Arabic probe beats the majority baseline. A treebank with a train split is refused by key."""
    import pandas as pd
    import pyarrow.parquet as pq

    spec = dict(name="split", output=str(tmp_path / "run"), checkpoints=[{"path": f"{tiny_series}/step_*"}],
                data={"ud_root": str(UD), "languages": ["en", "ar"], "split_test": {"ar": 0.7},
                      "max_train_sentences": 1000, "max_test_sentences": 1000},
                tasks=["pos"], layers=[0, 2], probe={"seeds": [0]})
    r = run_xlp("launch", write_spec(tmp_path / "s.yaml", **spec), "--quiet")
    assert r.returncode == 0, r.stderr
    feats = tmp_path / "run" / "features" / "step=0" / "lang=ar"
    train = set(pq.read_table(feats / "split=test-train", columns=["sent_id"]).column("sent_id").to_pylist())
    held_out = set(pq.read_table(feats / "split=test-heldout", columns=["sent_id"]).column("sent_id").to_pylist())
    assert not train & held_out and len(train | held_out) == 1000  # every sentence of ar_pud-ud-test, once
    assert 0.65 < len(train) / 1000 < 0.75

    probes = pd.read_parquet(tmp_path / "run" / "results" / "probes.parquet")
    assert {("ar", "ar"), ("ar", "en"), ("en", "ar"), ("en", "en")} == set(zip(probes.src_lang, probes.tgt_lang))
    to_ar = probes[probes.tgt_lang == "ar"]
    held_out_words = pq.read_table(feats / "split=test-heldout", columns=["word_id"]).num_rows
    assert set(to_ar.n_test) == {held_out_words}  # both sources scored on the same held-out words
    ar = probes[(probes.src_lang == "ar") & (probes.tgt_lang == "ar")]
    assert (ar.value > ar.baseline + 0.1).all()  # measured: 0.48-0.50 against a baseline of 0.27

    spec["data"]["split_test"] = {"en": 0.5}
    r = run_xlp("validate", write_spec(tmp_path / "bad.yaml", **spec))
    assert r.returncode == 1 and "data.split_test.en" in r.stderr and "train" in r.stderr
    assert "Traceback" not in r.stderr


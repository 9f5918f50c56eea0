import subprocess
import sys

import pytest
from conftest import MINILM, UD, run_xlp, write_spec

from xlp.errors import XlpError
from xlp.spec import load_spec


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
    with pytest.raises(XlpError, match="unknown task 'nope'"):
        load_spec(_spec(tmp_path, tasks=["nope"]))
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

"""The command line as a new user meets it: one-line errors, nothing written on refusal, certify and
spectra alike (flags, progress, refusals, wording), depth order, and quiet that is quiet."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def cli(*args, cwd, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "physgsa", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=env or ENV, timeout=timeout)


def one_error_line(res, code=2) -> str:
    """The run failed with ``code`` and said why in exactly one line, physgsa's own."""
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("physgsa: error: "), res.stderr
    assert [ln for ln in lines if ln.startswith("physgsa: error")] == [lines[-1]]
    assert "Traceback" not in res.stderr and "╭" not in res.stderr and "│" not in res.stderr
    return lines[-1]


def listing(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# -- output paths: the same refusal, the same exit code, nothing written ------------------------

@pytest.mark.parametrize("command", ["spectra", "certify"])
def test_out_that_is_a_file_is_bad_input(tmp_path, command):
    (tmp_path / "f").write_text("mine")
    line = one_error_line(cli(command, "example", "--out", "f", cwd=tmp_path))
    assert "'f'" in line and "not a directory" in line and "internal error" not in line
    assert (tmp_path / "f").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize("command", ["spectra", "certify"])
def test_memory_refusal_writes_nothing_and_names_only_real_options(tmp_path, command):
    line = one_error_line(cli(command, "example", "--max-memory", "1K", "--out", "o", cwd=tmp_path))
    assert "--max-memory" in line
    if command == "spectra":
        assert "--workers" not in line  # spectra has no --workers
    assert list(tmp_path.iterdir()) == []  # not even o/.physgsa-run/run.json


def test_spectra_refuses_another_runs_directory_like_certify(tmp_path):
    assert cli("spectra", "example", "--out", "o", "--quiet", cwd=tmp_path).returncode == 0
    before = listing(tmp_path / "o")
    line = one_error_line(cli("spectra", "example", "--q", "0.5", "--out", "o", cwd=tmp_path))
    assert "different input or parameters" in line and "q 0.9 -> 0.5" in line and "--overwrite" in line
    assert listing(tmp_path / "o") == before
    res = cli("spectra", "example", "--q", "0.5", "--out", "o", "--overwrite", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "o" / "spectra.json").read_text())["parameters"]["q"] == 0.5
    # The same run again is no conflict; a folder of somebody else's files is refused before any work.
    assert cli("spectra", "example", "--q", "0.5", "--out", "o", "--quiet", cwd=tmp_path).returncode == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    line = one_error_line(cli("spectra", "example", "--out", "mine", cwd=tmp_path))
    assert "notes.txt" in line and sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


# -- files that are not what their name says ---------------------------------------------------

def test_a_text_file_named_npz_is_not_an_archive(tmp_path):
    (tmp_path / "x.npz").write_text("hello\n")
    for args in (("certify", "x.npz", "--out", "o"), ("spectra", "x.npz", "--out", "o"),
                 ("certify", "example", "--groups", "x.npz", "--out", "o")):
        line = one_error_line(cli(*args, cwd=tmp_path))
        assert "not a readable .npz archive" in line and "text file" in line, line
        assert "pickle" not in line and "allow_pickle" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_nan_error_of_spectra_does_not_talk_about_certifying(tmp_path):
    np.savez(tmp_path / "m.npz", a=np.array([[1.0, np.nan], [0.0, 1.0]]), b=np.eye(2))
    line = one_error_line(cli("spectra", "m.npz", "--out", "o", cwd=tmp_path))
    assert "NaN" in line and "'a'" in line and "certif" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_unknown_model_advises_the_hf_command_that_exists():
    pytest.importorskip("huggingface_hub")
    from physgsa.models import ModelSourceError, resolve_source

    with pytest.raises(ModelSourceError) as err:
        resolve_source("nobody-here/no-such-model-xyz")
    assert "hf download nobody-here/no-such-model-xyz" in str(err.value) and "huggingface-cli" not in str(err.value)


def test_jacobian_without_a_tokenizer_names_the_command_line_option(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "tiny")  # no tokenizer beside it
    line = one_error_line(cli("certify", "tiny", "--mode", "jacobian", "--out", "o", cwd=tmp_path))
    assert "--inputs random" in line and "token ids or" not in line and "pass inputs=" not in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("model_type, words", [("bert", "--inputs random"), ("clip_vision_model", "--inputs FILE.npy")])
def test_jacobian_inputs_a_folder_cannot_take_are_refused_from_its_config_alone(tmp_path, model_type, words):
    # A folder holding only config.json: the refusal is decided from the files, before transformers
    # loads any weight, so no weights are needed to get it.
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": model_type}))
    line = one_error_line(cli("certify", "m", "--mode", "jacobian", "--out", "o", cwd=tmp_path))
    assert words in line
    assert not (tmp_path / "o").exists()


# -- usage errors: one line, exit 2 --------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (("certify", "example", "-q", "0.95", "--out", "o"), ("-q is not an option", "--q", "--quiet")),
    (("certify", "example", "--q", "abc", "--out", "o"), ("--q", "'abc'", "physgsa certify --help")),
    (("certify", "example", "--q=abc", "--out", "o"), ("--q", "'abc'")),
    (("certify", "example", "--window-search", "true", "--out", "o"), ("--window-search", "takes no value")),
    (("spectra", "example", "--json", "yes", "--out", "o"), ("--json", "takes no value")),
    (("certify", "example"), ("--out",)),
    (("certify", "example", "--out"), ("--out", "physgsa certify --help")),
    (("certify", "example", "--bogus", "--out", "o"), ("--bogus",)),
    (("bogus",), ("bogus",)),
    (("--bogus",), ("--bogus",)),
])
def test_every_usage_error_is_one_line_and_exit_2(tmp_path, args, words):
    line = one_error_line(cli(*args, cwd=tmp_path))
    for w in words:
        assert w in line, (w, line)
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_are_one_line_in_process_too(tmp_path):
    from typer.testing import CliRunner

    from physgsa.cli import app

    res = CliRunner().invoke(app, ["certify", "example", "--q", "abc", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and res.output.count("physgsa: error:") == 1 and "╭" not in res.output


def test_help_shows_switches_without_a_value_and_both_commands_take_the_same_flags(tmp_path):
    for command in ("certify", "spectra"):
        res = cli(command, "--help", cwd=tmp_path)
        assert res.returncode == 0 and "Examples" in res.stdout
        assert "<bool>" not in res.stdout and "╭" not in res.stdout
        for flag in ("--quiet", "--json", "--overwrite", "--max-memory"):
            assert flag in res.stdout, (command, flag)
        assert "-q," not in res.stdout and "-q " not in res.stdout.replace("--q ", "")
    res = cli("certify", "--help", cwd=tmp_path)
    line = next(ln for ln in res.stdout.splitlines() if "--window-search" in ln)
    assert line.split("--window-search", 1)[1].strip()[:1] not in ("<", "B", "")  # help text, no value


# -- progress, quiet, depth order ----------------------------------------------------------------

def test_spectra_is_quiet_with_quiet_and_reports_progress_without(tmp_path):
    quiet = cli("spectra", "example", "--out", "q", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    loud = cli("spectra", "example", "--out", "l", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    progress = [ln for ln in loud.stderr.splitlines() if ln.startswith("physgsa: spectra")]
    assert progress and "6/6 matrices analysed" in loud.stderr
    assert "6 matrices analysed" in loud.stdout
    summary = json.loads(cli("spectra", "example", "--out", "l", "--json", "--quiet", cwd=tmp_path).stdout)
    assert summary["n_matrices"] == 6


def test_spectra_lists_matrices_in_depth_order_with_their_names_on_the_plots(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    keys = ["h.0", "h.1", "h.10", "h.11", "h.2", "h.3", "wte"]  # the file's (sorted) key order
    np.savez(tmp_path / "m.npz", **{k: rng.standard_normal((8, 8)) for k in keys})
    res = cli("spectra", "m.npz", "--out", "o", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    names = pd.read_parquet(tmp_path / "o" / "spectra.parquet")["name"].tolist()
    assert names == ["h.0", "h.1", "h.2", "h.3", "h.10", "h.11", "wte"]
    html = (tmp_path / "o" / "spectra.html").read_text()
    import base64
    import re

    svg = base64.b64decode(re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', html).group(1)).decode()
    assert "h.10" in svg and "wte" in svg and "matrix index" not in svg


def test_natural_key_orders_numbers_by_value():
    from physgsa.outputs.spectra import natural_key

    names = ["h.10.mlp", "h.2.attn", "h.2.mlp", "h.1.attn", "embed", "h.10.attn"]
    assert sorted(names, key=natural_key) == ["embed", "h.1.attn", "h.2.attn", "h.2.mlp", "h.10.attn", "h.10.mlp"]


def test_quiet_silences_the_libraries_progress_bars(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "tiny")
    args = ("certify", "tiny", "--mode", "jacobian", "--inputs", "random")
    quiet = cli(*args, "--out", "q", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == "", quiet.stderr
    loud = cli(*args, "--out", "l", cwd=tmp_path)
    assert loud.returncode == 0 and "physgsa: " in loud.stderr  # what --quiet silenced was there


def test_digits_resnet_says_before_it_trains(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from physgsa import cli as C
    from physgsa.models.bundled import digits

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert C._announce("digits-resnet", quiet=False) is True
    err = capsys.readouterr().err
    assert "training digits-resnet" in err and "10 to 15 s" in err and str(digits.cache_path()) in err
    assert C._announce("digits-resnet", quiet=True) is False and C._announce("minilm", quiet=False) is False
    digits.cache_path().parent.mkdir(parents=True)
    digits.cache_path().write_bytes(b"")
    assert C._announce("digits-resnet", quiet=False) is False  # cached: nothing to say
    assert capsys.readouterr().err == ""

"""Issue 24, the command line's edges: refusals come first and write nothing, compare and spectra
refuse another run's or the user's files like certify, and --version / --help say what is true."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def cli(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "physgsa", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=ENV, timeout=timeout)


def one_error_line(res, code=2) -> str:
    """The run failed with ``code`` and said why in exactly one line, physgsa's own."""
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("physgsa: error: "), res.stderr
    assert [ln for ln in lines if ln.startswith("physgsa: error")] == [lines[-1]], res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    return lines[-1]


def listing(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# -- item 1: compare with nothing to compare ------------------------------------------------------

def test_compare_without_other_or_change_is_one_line_exit_2(tmp_path):
    line = one_error_line(cli("compare", "example", "--out", "c2/", cwd=tmp_path))
    assert "--quantize" in line and "other model" in line
    assert list(tmp_path.iterdir()) == []
    # the same line where --out holds another comparison (what is missing is said first)
    assert cli("compare", "example", "--noise", "0.01", "--out", "c2", "--quiet", cwd=tmp_path).returncode == 0
    line = one_error_line(cli("compare", "example", "--q", "0.5", "--out", "c2/", cwd=tmp_path))
    assert "other model" in line


# -- item 2: a missing --inputs file, refused before the model is loaded ---------------------------

def test_missing_jacobian_inputs_file_is_refused_before_loading(tmp_path):
    line = one_error_line(cli("certify", "--mode", "jacobian", "--inputs", "nofile.txt", "--out", "x/",
                              cwd=tmp_path, timeout=120))
    assert "--inputs" in line and "nofile.txt" in line
    assert list(tmp_path.iterdir()) == []


def test_missing_jacobian_inputs_file_names_the_argument_in_python(tmp_path, monkeypatch):
    from physgsa import load_chain
    from physgsa.core.validation import InvalidParameterError
    from physgsa.models import jacobian

    def never(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(jacobian, "jacobian_chain", never)
    with pytest.raises(InvalidParameterError, match=r"inputs='.*nofile.txt'"):
        load_chain("minilm", mode="jacobian", inputs=str(tmp_path / "nofile.txt"))
    (tmp_path / "d").mkdir()
    with pytest.raises(InvalidParameterError, match="inputs="):
        load_chain("minilm", mode="jacobian", inputs=str(tmp_path / "d"))


# -- item 3: a refusal found from the chain's layout writes nothing and never blocks a rerun ------

@pytest.mark.parametrize("flag", [("--units", "heads"), ("--groups", "heads")])
def test_heads_without_a_layout_is_refused_before_any_record(tmp_path, flag):
    res = cli("certify", "example", *flag, "--out", "uh/", cwd=tmp_path)
    line = one_error_line(res)
    assert "head" in line
    assert "spectra 1/" not in res.stderr  # refused before any factor was decomposed
    assert list(tmp_path.iterdir()) == []  # not even uh/.physgsa-run
    (tmp_path / "uh").mkdir()
    line = one_error_line(cli("certify", "example", *flag, "--out", "uh/", cwd=tmp_path))
    assert listing(tmp_path / "uh") == {} and [p.name for p in (tmp_path / "uh").iterdir()] == []
    ok = cli("certify", "example", "--out", "uh/", "--quiet", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_given_groups_of_the_wrong_length_are_refused_before_any_record(tmp_path):
    from physgsa.core.examples import example_chain
    from physgsa.core.validation import InvalidParameterError
    from physgsa.runs.certify import certify

    chain = example_chain()
    groups = {k.name(chain): [0, 1] for k in chain.links}
    with pytest.raises(InvalidParameterError, match="length"):
        certify(chain, groups=groups, checkpoint=tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_a_refusal_found_mid_run_leaves_no_records(tmp_path, monkeypatch):
    from physgsa.core.examples import example_chain
    from physgsa.core.validation import InvalidParameterError
    from physgsa.runs import certify as certify_mod

    def refuse(*a, **k):
        raise InvalidParameterError("refused mid-run")

    monkeypatch.setattr(certify_mod, "_interface", refuse)
    (tmp_path / "o").mkdir()
    with pytest.raises(InvalidParameterError, match="mid-run"):
        certify_mod.certify(example_chain(), checkpoint=tmp_path / "o")
    assert list((tmp_path / "o").iterdir()) == []  # no .physgsa-run to block a corrected rerun


# -- item 7: compare and spectra refuse another run's and the user's files -----------------------

def test_compare_refuses_another_inputs_comparison_without_overwrite(tmp_path):
    assert cli("compare", "example", "--noise", "0.01", "--out", "c", "--quiet", cwd=tmp_path).returncode == 0
    before = listing(tmp_path / "c")
    line = one_error_line(cli("compare", "example", "--noise", "0.02", "--out", "c", cwd=tmp_path))
    assert "'c'" in line and "different input or parameters" in line and "--overwrite" in line
    assert listing(tmp_path / "c") == before
    # the same comparison again replaces its own files
    assert cli("compare", "example", "--noise", "0.01", "--out", "c", "--quiet", cwd=tmp_path).returncode == 0
    assert listing(tmp_path / "c") == before
    res = cli("compare", "example", "--noise", "0.02", "--out", "c", "--overwrite", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert listing(tmp_path / "c") != before


def test_spectra_refuses_the_users_files_beside_certify_results(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    res = cli("certify", "example", "--out", "o", "--keep-others", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    before = listing(out)
    line = one_error_line(cli("spectra", "example", "--out", "o", cwd=tmp_path))
    assert "mine.txt" in line and "--keep-others" in line
    assert listing(out) == before
    res = cli("spectra", "example", "--out", "o", "--keep-others", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (out / "mine.txt").read_text() == "mine" and (out / "spectra.json").is_file()


# -- item 12: --version, and --out's help says what happens ----------------------------------------

def test_version(tmp_path):
    from physgsa import __version__

    res = cli("--version", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"physgsa {__version__}"


def test_certify_out_help_says_another_runs_results_need_overwrite(tmp_path):
    res = cli("certify", "--help", cwd=tmp_path)
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert "replaced if it holds physgsa results" not in text
    out_help = text.split("-o, --out <path>")[1].split("--order")[0]
    assert "--overwrite" in out_help and "--keep-others" in out_help, out_help


# -- item 9 (parts): a switch given a value, and the accepted formats ------------------------------

@pytest.mark.parametrize("value", ["1", "true"])
def test_a_switch_given_a_value_is_named_not_read_as_a_model(tmp_path, value):
    line = one_error_line(cli("certify", "--window-search", value, "--out", "ws", cwd=tmp_path))
    assert "--window-search is a switch and takes no value" in line and "hf download" not in line
    assert list(tmp_path.iterdir()) == []


def test_the_accepted_formats_name_npz(tmp_path):
    (tmp_path / "f.txt").write_text("hi")
    line = one_error_line(cli("certify", "f.txt", "--out", "o", cwd=tmp_path))
    assert ".npz" in line and ".safetensors" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


@pytest.mark.parametrize(("typed", "meant"), [("minilmm", "minilm"), ("digits-resnt", "digits-resnet"),
                                              ("exampel", "example")])
def test_a_mistyped_bundled_name_gets_a_suggestion_not_a_download_hint(tmp_path, typed, meant):
    # Issue 24, item 9: `certify minilmm` suggested `hf download minilmm`.
    from typer.testing import CliRunner

    from physgsa.cli import app

    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["certify", typed, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert f"Did you mean '{meant}'?" in r.output and "hf download" not in r.output
    assert not out.exists()

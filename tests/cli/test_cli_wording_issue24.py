"""Issue 24, items 8, 11 and 12: the command line names flags (never Python arguments), refuses
options that do not apply, and says the true reason Jacobian mode is refused on a trained model."""

import numpy as np
import pytest
from typer.testing import CliRunner

from physgsa.cli import app, certify


def _certify_table() -> dict:
    from physgsa.models import MODEL_PARAMS
    from physgsa.runs.certify import CERTIFY_PARAMS

    names = certify.physgsa_options[0]
    return {n: t[n] for n in names for t in (CERTIFY_PARAMS, MODEL_PARAMS) if n in t and t[n].help}


def _bad_value(param):
    if param.kind == "choice":
        return "zzz"
    if param.kind in ("int", "float") and param.low is not None:
        low = param.low if param.closed in ("neither", "right") else param.low - 1
        return str(int(low) if param.kind == "int" else low)
    if param.kind in ("int", "float") and param.high is not None:
        return str(param.high + 1)
    return None


CASES = sorted((n, v) for n, p in _certify_table().items() if (v := _bad_value(p)) is not None)


def error_line(args, tmp_path, code=2) -> str:
    out = tmp_path / "o"
    r = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("physgsa: error: ")]
    assert len(lines) == 1 and "internal error" not in r.output, r.output
    assert not out.exists()
    return lines[0]


def python_words(line: str, name: str) -> bool:
    return "parameter of" in line or f"{name}=" in line or "load_chain" in line


# -- item 8: flags, never Python arguments -------------------------------------------------------

def test_the_table_covers_many_flags():
    assert len(CASES) >= 15 and {"mode", "tokens", "conv", "units", "q", "n_groups"} <= {n for n, _ in CASES}


@pytest.mark.parametrize(("name", "value"), CASES)
def test_a_wrong_value_names_the_flag(tmp_path, name, value):
    line = error_line(["certify", "example", f"--{name.replace('_', '-')}", value], tmp_path)
    assert f"--{name.replace('_', '-')}" in line and not python_words(line, name), line


def test_a_mistyped_choice_gets_a_suggestion(tmp_path):
    line = error_line(["certify", "example", "--mode", "jacobin"], tmp_path)
    assert "--mode" in line and "Did you mean 'jacobian'?" in line and not python_words(line, "mode")


def test_python_keeps_python_wording():
    from physgsa import chain_from
    from physgsa.core.validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=r"The 'mode' parameter .*Did you mean 'jacobian'\?"):
        chain_from("minilm", mode="jacobin")


def test_device_cuda_without_cuda_names_the_flag(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = error_line(["certify", "example", "--device", "cuda"], tmp_path)
    assert "--device cuda" in line and "--device cpu" in line and not python_words(line, "device"), line
    from physgsa.core.validation import InvalidParameterError
    from physgsa.models.device import check_device

    with pytest.raises(InvalidParameterError, match=r"device='cuda'.*device=None"):
        check_device("cuda", "device")


def test_units_heads_names_the_flag(tmp_path):
    line = error_line(["certify", "example", "--units", "heads"], tmp_path)
    assert "--units heads" in line and "--units channels" in line and not python_words(line, "units"), line


def test_a_state_dict_without_config_names_flags_in_every_command(tmp_path):
    import torch

    torch.save({"conv.weight": torch.randn(4, 3, 3, 3), "fc.weight": torch.randn(5, 4)}, tmp_path / "m.pt")
    for args in (["certify", str(tmp_path / "m.pt")], ["compare", str(tmp_path / "m.pt"), "--noise", "0.1"]):
        line = error_line(args, tmp_path)
        assert "--build" in line and "--sample-shape" in line and "build=" not in line, line
        assert "sample_shape=" not in line and "(1, C, H, W)" not in line, line


@pytest.mark.parametrize(("flag", "value"), [("--tokens", "diagonal"), ("--interfaces", "heads")])
def test_walker_messages_keep_the_flag_apart_from_its_value(tmp_path, flag, value):
    line = error_line(["certify", "--build", "m.py:f", "--sample-shape", "1,3,8,8", flag, value], tmp_path)
    assert f"{flag} {value}" in line and f"{flag}{value}" not in line, line


# -- item 11: options that do not apply are refused ----------------------------------------------

@pytest.fixture
def npz_chain(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "c.npz"
    np.savez(path, a=rng.standard_normal((6, 6)), b=rng.standard_normal((6, 6)), c=rng.standard_normal((6, 6)))
    return path


@pytest.mark.parametrize("extra", [["--mode", "jacobian"], ["--conv", "fft"], ["--tokens", "diagonal"],
                                   ["--factor", "branch"], ["--interfaces", "heads"]])
def test_model_options_on_a_plain_chain_are_refused(tmp_path, npz_chain, extra):
    for chain in ("example", str(npz_chain)):
        line = error_line(["certify", chain, *extra], tmp_path)
        assert " ".join(extra) in line and "chain of factor matrices" in line, line


def test_an_order_that_leaves_out_factors_is_refused(tmp_path, npz_chain):
    line = error_line(["certify", str(npz_chain), "--order", "b,a"], tmp_path)
    assert "--order" in line and "'c'" in line, line
    res = CliRunner().invoke(app, ["certify", str(npz_chain), "--order", "c,b,a", "--quiet", "--out",
                                   str(tmp_path / "ok")])
    assert res.exit_code == 0, res.output


def test_conv_fft_on_a_transformer_is_refused(tmp_path):
    line = error_line(["certify", "minilm", "--conv", "fft"], tmp_path)
    assert "--conv fft" in line and "convolutions" in line, line


def test_n_groups_above_the_rows_is_refused_saying_the_maximum(tmp_path):
    from physgsa.core.examples import example_chain

    rows = min(f.shape[0] for f in example_chain().factors)
    line = error_line(["certify", "example", "--n-groups", "1000"], tmp_path)
    assert "--n-groups 1000" in line and f"at most {rows}" in line, line


# -- item 12: the true reason, and digits-resnet's result line ------------------------------------

@pytest.mark.parametrize("name", ["pysource-gpt", "digits-vit", "digits-diffusion"])
def test_jacobian_mode_on_a_trained_model_says_the_true_reason(tmp_path, name, monkeypatch):
    from physgsa.models.bundled import trained

    def never(*a, **k):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(trained, "ensure_trained", never)
    line = error_line(["certify", name, "--mode", "jacobian"], tmp_path)
    assert "not available for" in line and "config.json (or a module)" not in line and "--mode" in line, line


def test_jacobian_and_walker_messages_name_flags_on_the_command_line():
    # The two modules left in Python wording at first: jacobian.py (static-only CNNs) and the walker's
    # static mode (conv fft, mode jacobian).
    transformers = pytest.importorskip("transformers")
    from physgsa.core.validation import command_line
    from physgsa.models.jacobian import jacobian_chain
    from physgsa.models.sources import ModelSourceError

    model = transformers.RegNetModel(transformers.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16],
                                                               depths=[1, 1], groups_width=8)).eval()
    with pytest.raises(ModelSourceError) as python_side:
        jacobian_chain(model)
    assert "mode='static'" in str(python_side.value)
    with command_line(), pytest.raises(ModelSourceError) as cli_side:
        jacobian_chain(model)
    assert "--mode static" in str(cli_side.value) and "mode=" not in str(cli_side.value)

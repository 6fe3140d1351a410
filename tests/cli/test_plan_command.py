"""``physgsa plan`` (issue 23, item 3): the budget met exactly, the least summed predicted damage, and
the applied checkpoint, each against an independent computation (shapes and bits by hand, a
brute force over every assignment, round-to-nearest written out here)."""

import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from typer.testing import CliRunner

from physgsa.cli import app

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

D, LAYERS, HIDDEN = 32, 2, 128  # GPT-2: n_embd 32, n_inner 4 * 32


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A seeded 2-layer GPT-2 (transformers, from a config) saved as a model folder."""
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=D, n_layer=LAYERS, n_head=2, bos_token_id=0,
                                  eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def run(args, code=0):
    r = CliRunner().invoke(app, ["plan", *args])
    assert r.exit_code == code, r.output
    return r


def by_hand_bits(rows: int, cols: int, fmt: str) -> int:
    """Bits of an (out, in) matrix, scales (16 bits) counted: int4 in groups of 32 inputs, int8 per output row."""
    if fmt == "int4":
        return rows * cols * 4 + 16 * rows * math.ceil(cols / 32)
    assert fmt == "int8"
    return rows * cols * 8 + 16 * rows


# (out, in) of every matrix of one layer, by hand from the config: q, k, v and o are D x D, up is
# HIDDEN x D, down is D x HIDDEN.
SHAPES = {"q": (D, D), "k": (D, D), "v": (D, D), "o": (D, D), "up": (HIDDEN, D), "down": (D, HIDDEN)}


@pytest.fixture(scope="module")
def planned(gpt2_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "out"
    r = run([str(gpt2_folder), "--bits", "5.5", "--formats", "int4,int8", "--inputs", "random", "--apply",
             "--out", str(out)])
    return out, json.loads((out / "plan.json").read_text()), r.output


def test_the_budget_is_met_exactly_and_counted_by_hand(planned):
    out, doc, line = planned
    names = [f"layer{layer}.{m}" for layer in range(LAYERS) for m in SHAPES]
    assert [b["block"] for b in doc["blocks"]] == names
    bits = sum(by_hand_bits(*SHAPES[b["block"].split(".")[1]], b["format"]) for b in doc["blocks"])
    n = LAYERS * sum(r * c for r, c in SHAPES.values())
    assert doc["n_weights"] == n
    assert Fraction(doc["total_bits"]) == bits and Fraction(doc["bits_per_weight"]) == Fraction(bits, n)
    assert Fraction(bits, n) <= Fraction(11, 2) and doc["budget_bits"] == "11/2"
    assert {b["format"] for b in doc["blocks"]} == {"int4", "int8"}  # a real mix at this budget
    assert "blocks at" in line and (out / "plan.html").is_file()


def test_the_plan_is_the_least_summed_damage_of_every_assignment(planned):
    """Brute force over all 2^12 assignments, from the predicted table plan.json holds."""
    _, doc, _ = planned
    names = [b["block"] for b in doc["blocks"]]
    cost = {(b, f): by_hand_bits(*SHAPES[b.split(".")[1]], f) for b in names for f in ("int4", "int8")}
    cap = Fraction(11, 2) * doc["n_weights"]
    best = min(sum(doc["predicted"][b][f] for b, f in zip(names, choice))
               for choice in itertools.product(("int4", "int8"), repeat=len(names))
               if sum(cost[(b, f)] for b, f in zip(names, choice)) <= cap)
    assert doc["predicted_damage"] == pytest.approx(best, rel=1e-12, abs=1e-15)
    assert doc["predicted_damage"] == pytest.approx(sum(b["predicted_damage"] for b in doc["blocks"]), rel=1e-12)


def rtn(w: np.ndarray, bits: int, group: int | None) -> np.ndarray:
    """Symmetric round-to-nearest of an (out, in) matrix, written out here: per row, or per row and input group."""
    q = 2 ** (bits - 1) - 1
    out = np.empty_like(w)
    step = w.shape[1] if group is None else group
    for j in range(0, w.shape[1], step):
        blk = w[:, j:j + step]
        scale = np.abs(blk).max(axis=1, keepdims=True) / q
        scale[scale == 0] = 1.0
        out[:, j:j + step] = np.clip(np.round(blk / scale), -q, q) * scale
    return out


def test_the_applied_checkpoint_holds_the_planned_weights(planned, gpt2_folder):
    out, doc, _ = planned
    ck = safetensors_numpy.load_file(str(out / "checkpoint" / "model.safetensors"))
    orig = safetensors_numpy.load_file(str(gpt2_folder / "model.safetensors"))
    assert set(ck) == set(orig)
    fmt = {b["block"]: b["format"] for b in doc["blocks"]}
    rows = {"q": slice(0, D), "k": slice(D, 2 * D), "v": slice(2 * D, 3 * D)}
    keys = {"o": "attn.c_proj", "up": "mlp.c_fc", "down": "mlp.c_proj"}
    touched = set()
    for layer in range(LAYERS):
        for m in SHAPES:
            key = f"transformer.h.{layer}.{keys.get(m, 'attn.c_attn')}.weight"
            touched.add(key)
            w = orig[key].astype(np.float64).T  # GPT-2's Conv1D stores (in, out)
            w = w[rows[m]] if m in rows else w
            got = ck[key].astype(np.float64).T
            got = got[rows[m]] if m in rows else got
            bits, group = (4, 32) if fmt[f"layer{layer}.{m}"] == "int4" else (8, None)
            want = rtn(w, bits, group)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(w).max())
            assert not np.array_equal(got, w)
    for key in set(orig) - touched:  # embeddings, norms, biases: as they were
        np.testing.assert_array_equal(ck[key], orig[key].astype(ck[key].dtype))
    # the folder is a checkpoint transformers loads as it is
    m = transformers.GPT2LMHeadModel.from_pretrained(out / "checkpoint").eval()
    assert m(torch.zeros(1, 4, dtype=torch.long)).logits.shape == (1, 4, 64)


def test_the_same_input_gives_the_same_bytes_and_python_agrees(planned, gpt2_folder, tmp_path):
    import physgsa

    out, _, _ = planned
    res = physgsa.plan(str(gpt2_folder), bits="5.5", formats="int4,int8", inputs="random", apply=True)
    physgsa.save(res, tmp_path / "py")
    for name in ("plan.json", "plan.html", "checkpoint/model.safetensors", "checkpoint/config.json"):
        assert (tmp_path / "py" / name).read_bytes() == (out / name).read_bytes(), name


def test_a_plan_without_apply_removes_an_earlier_checkpoint(gpt2_folder, tmp_path):
    out = tmp_path / "o"
    args = [str(gpt2_folder), "--bits", "8", "--formats", "int4,int8", "--per", "depth", "--inputs", "random",
            "--out", str(out)]
    run([*args, "--apply"])
    assert (out / "checkpoint" / "model.safetensors").is_file()
    run(args)
    assert not (out / "checkpoint").exists() and (out / "plan.json").is_file()


@pytest.mark.parametrize(("extra", "words"), [
    (["--bits", "3"], ["--bits 3", "least achievable is 4.5"]),
    (["--bits", "x"], ["--bits", "bits per weight"]),
    (["--bits", "5", "--formats", "int5"], ["--formats", "int5"]),
    (["--bits", "5", "--per", "rows"], ["--per", "matrix"]),
])
def test_bad_input_is_one_line_and_writes_nothing(gpt2_folder, tmp_path, extra, words):
    out = tmp_path / "o"
    r = run([str(gpt2_folder), *extra, "--inputs", "random", "--out", str(out)], code=2)
    lines = [ln for ln in r.output.splitlines() if ln.startswith("physgsa: error: ")]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert all(w in lines[0] for w in words), lines[0]
    assert "bits=" not in lines[0] and not out.exists()


def test_the_blocks_the_score_cannot_see_keep_their_widest_format(tmp_path):
    """digits-resnet: the stem conv1 and the classifier fc are read by no factor of the static chain."""
    out = tmp_path / "o"
    run(["digits-resnet", "--bits", "4.6", "--formats", "int3,int4,int8", "--per", "depth", "--out", str(out)])
    doc = json.loads((out / "plan.json").read_text())
    fmt = {b["block"]: (b["format"], b["seen"]) for b in doc["blocks"]}
    assert doc["unseen"] == ["block0", "block4"] and doc["matrices"]["block0"] == ["conv1.weight"]
    assert fmt["block0"] == ("int8", False) and fmt["block4"] == ("int8", False)
    assert all(seen for name, (_, seen) in fmt.items() if name not in ("block0", "block4"))
    assert Fraction(doc["bits_per_weight"]) <= Fraction(23, 5)
    assert "cannot see block0, block4" in (out / "plan.html").read_text()

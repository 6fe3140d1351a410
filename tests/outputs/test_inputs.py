"""Bad input: a clear one-line error naming the factor or file, non-zero exit, nothing written."""

import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import physgsa
from physgsa import Chain, ChainFileError, InvalidFactorError, read_chain


def run_cli(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "physgsa.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


def npz(path, **arrays):
    np.savez(path, **arrays)
    return path


GOOD = np.eye(3) + 0.1


@pytest.mark.parametrize("array, match", [
    (np.zeros((3, 3)), "'bad' .*zero matrix"),
    (np.array([[1.0, np.nan], [0, 1]]), "'bad' .*NaN or Inf"),
    (np.array([[1.0, np.inf], [0, 1]]), "'bad' .*NaN or Inf"),
    (np.zeros((0, 3)), "'bad' .*empty"),
    (np.ones(3), "'bad' .*2-D .*1-D"),
    (np.ones((2, 2, 2)), "'bad' .*2-D .*3-D"),
    (np.array([["a", "b"]]), "'bad' .*not a real number type"),
    (np.ones((2, 2), dtype=complex), "'bad' .*not a real number type"),
])
def test_bad_matrices_in_python(array, match):
    with pytest.raises(InvalidFactorError, match=match):
        Chain.from_arrays([("good", GOOD), ("bad", array)])


def test_bad_chain_structure():
    with pytest.raises(InvalidFactorError, match="holds no factor"):
        Chain.from_arrays([])
    with pytest.raises(InvalidFactorError, match="appears twice"):
        Chain.from_arrays([("a", GOOD), ("a", GOOD)])


def test_npz_object_array_is_refused(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, good=GOOD, bad=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ChainFileError, match="'bad' in .*obj.npz.*not numeric"):
        read_chain(p)


def test_truncated_and_corrupted_files(tmp_path):
    p = npz(tmp_path / "c.npz", a=np.ones((50, 50)), b=np.ones((50, 50)))
    data = p.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ChainFileError, match="trunc.npz"):
        read_chain(tmp_path / "trunc.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all" * 10)
    with pytest.raises(ChainFileError, match="junk.npz.*not a readable .npz"):
        read_chain(tmp_path / "junk.npz")
    save_file({"a": np.ones((4, 4)), "b": np.ones((4, 4))}, str(tmp_path / "c.safetensors"))
    data = (tmp_path / "c.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[:-40])
    with pytest.raises(ChainFileError, match="t.safetensors"):
        read_chain(tmp_path / "t.safetensors")
    (tmp_path / "h.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(ChainFileError, match="h.safetensors.*header"):
        read_chain(tmp_path / "h.safetensors")
    (tmp_path / "j.safetensors").write_bytes((5).to_bytes(8, "little") + b"{nope")
    with pytest.raises(ChainFileError, match="j.safetensors.*unreadable"):
        read_chain(tmp_path / "j.safetensors")


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(ChainFileError, match="'.*nothere.npz' does not exist"):
        read_chain(tmp_path / "nothere.npz")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(ChainFileError, match="suffix '.txt'"):
        read_chain(tmp_path / "x.txt")


def test_file_key_order_and_explicit_order(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"z": rng.standard_normal((4, 4)), "a": rng.standard_normal((4, 4)), "m": rng.standard_normal((4, 4))}
    p = npz(tmp_path / "o.npz", **arrays)
    assert [f.name for f in read_chain(p).factors] == ["z", "a", "m"]
    assert [f.name for f in read_chain(p, order=["m", "z"]).factors] == ["m", "z"]
    with pytest.raises(ChainFileError, match="--order names 'q'.*Its arrays: z, a, m"):
        read_chain(p, order=["q"])
    save_file(arrays, str(tmp_path / "o.safetensors"))
    ch = read_chain(tmp_path / "o.safetensors")
    assert sorted(f.name for f in ch.factors) == ["a", "m", "z"]
    for f in ch.factors:
        np.testing.assert_array_equal(f.matrix, arrays[f.name])


def test_safetensors_low_precision_is_widened(tmp_path):
    a = np.array([[1.5, -2.25], [0.125, 3.0]], dtype=np.float32)
    save_file({"h": a.astype(np.float16)}, str(tmp_path / "h.safetensors"))
    np.testing.assert_array_equal(read_chain(tmp_path / "h.safetensors").factors[0].matrix, a)
    # bfloat16 by hand: the top 16 bits of float32 (these values are exact in bf16).
    bits = (a.view(np.uint32) >> 16).astype(np.uint16)
    raw = bits.tobytes()
    header = b'{"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}'
    (tmp_path / "b.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + raw)
    np.testing.assert_array_equal(read_chain(tmp_path / "b.safetensors").factors[0].matrix, a)


@pytest.mark.parametrize("case", ["zero", "nan", "inf", "empty", "1d", "3d", "object", "missing", "truncated",
                                  "corrupt", "option", "order"])
def test_cli_bad_input_one_line_nonzero_exit_nothing_written(tmp_path, case):
    f = tmp_path / "in.npz"
    extra = []
    if case == "zero":
        npz(f, a=GOOD, b=np.zeros((3, 3)))
    elif case == "nan":
        npz(f, a=GOOD, b=np.full((3, 3), np.nan))
    elif case == "inf":
        npz(f, a=GOOD, b=np.full((3, 3), np.inf))
    elif case == "empty":
        npz(f, a=GOOD, b=np.zeros((0, 3)))
    elif case == "1d":
        npz(f, a=GOOD, b=np.ones(3))
    elif case == "3d":
        npz(f, a=GOOD, b=np.ones((3, 3, 3)))
    elif case == "object":
        np.savez(f, a=GOOD, b=np.array([None, 1], dtype=object))
    elif case == "missing":
        f = tmp_path / "absent.npz"
    elif case == "truncated":
        npz(tmp_path / "full.npz", a=np.ones((40, 40)), b=np.ones((40, 40)))
        f.write_bytes((tmp_path / "full.npz").read_bytes()[:700])
    elif case == "corrupt":
        f.write_bytes(os.urandom(2000))
    elif case == "option":
        npz(f, a=GOOD, b=GOOD)
        extra = ["--threshold", "median"]
    elif case == "order":
        npz(f, a=GOOD, b=GOOD)
        extra = ["--order", "a,c"]
    out = tmp_path / "out"
    res = run_cli("certify", str(f), "--out", str(out), *extra, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("physgsa: error: "), res.stderr
    assert "Traceback" not in res.stderr
    named = {"zero": "'b'", "nan": "'b'", "inf": "'b'", "empty": "'b'", "1d": "'b'", "3d": "'b'", "object": "'b'",
             "missing": "absent.npz", "truncated": "in.npz", "corrupt": "in.npz", "option": "--threshold",
             "order": "'c'"}[case]
    assert named in lines[0]
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_cli_runs_and_is_byte_identical(tmp_path):
    rng = np.random.default_rng(0)
    f = npz(tmp_path / "c.npz", a=rng.standard_normal((8, 6)), b=rng.standard_normal((8, 8)),
            c=rng.standard_normal((5, 8)))
    for d in ("o1", "o2"):
        res = run_cli("certify", str(f), "--out", str(tmp_path / d), "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    import json

    summary = json.loads(res.stdout)
    assert summary["n_interfaces"] == 2
    for name in physgsa.outputs.result.OUTPUT_FILES:
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes()


def test_cli_help_and_models(tmp_path):
    res = run_cli("certify", "--help", cwd=tmp_path)
    assert res.returncode == 0 and "Examples" in res.stdout
    res = run_cli("models", cwd=tmp_path)
    assert res.returncode == 0 and "example" in res.stdout


def test_cli_user_given_groups_file(tmp_path):
    rng = np.random.default_rng(0)
    f = npz(tmp_path / "c.npz", a=rng.standard_normal((6, 6)), b=rng.standard_normal((6, 6)))
    np.savez(tmp_path / "g.npz", **{"a->b": np.array([0, 0, 0, 1, 1, 1])})
    res = run_cli("certify", str(f), "--groups", str(tmp_path / "g.npz"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    import pandas as pd

    assert pd.read_parquet(tmp_path / "o" / "rows.parquet")["group"].tolist() == [0, 0, 0, 1, 1, 1]
    np.savez(tmp_path / "bad.npz", **{"a->b": np.array([0.5, 1.0])})
    res = run_cli("certify", str(f), "--groups", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o2"), cwd=tmp_path)
    assert res.returncode == 2 and "'a->b'" in res.stderr and "integer" in res.stderr
    assert not (tmp_path / "o2").exists()

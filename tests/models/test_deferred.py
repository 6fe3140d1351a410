"""Deferred factors: a chain read from a file or a checkpoint holds no matrix, and certify's memory
is set by the widest interface, not by the chain's depth (issue 15)."""

import gc
import json
import os
import pickle
import weakref

import numpy as np
import pytest

import physgsa
from physgsa import Chain, certify, read_chain
from physgsa.core.chain import Deferred
from physgsa.runs import certify as pipeline


def _write_chain(path, n_factors, width, seed=0):
    rng = np.random.default_rng(seed)
    mats = {f"blocks.{i}": np.eye(width) + 0.3 * rng.standard_normal((width, width)) / np.sqrt(width)
            for i in range(n_factors)}
    np.savez(path, **mats)
    return mats


def _outputs(res, tmp, name):
    out = tmp / name
    res.save(out)
    return {f: (out / f).read_bytes() for f in ("factors.parquet", "interfaces.parquet", "rows.parquet",
                                                 "heatmaps.npz", "heads.parquet", "profile.parquet")}


def test_a_chain_file_gives_deferred_factors_that_hold_no_matrix(tmp_path):
    mats = _write_chain(tmp_path / "c.npz", 3, 64)
    ch = read_chain(tmp_path / "c.npz")
    for f in ch.factors:
        assert f.deferred and f.shape == (64, 64)
        # What travels to a worker is the reference, not the 32 KiB matrix.
        assert len(pickle.dumps(f)) < 1024
        np.testing.assert_array_equal(f.matrix, mats[f.name])
        assert f.matrix.dtype == np.float64 and not f.matrix.flags.writeable
    # The same in memory is not deferred, and pickles with its matrix.
    eager = Chain.from_arrays(mats)
    assert not eager.factors[0].deferred and len(pickle.dumps(eager.factors[0])) > 64 * 64 * 8


@pytest.mark.parametrize("layout", ["C", "F", ">f8", "float32", "compressed", "safetensors"])
def test_deferred_and_in_memory_chains_give_the_same_bytes(tmp_path, layout):
    # Memory-mapped (stored, any order or byte order), inflated (compressed) and safetensors arrays.
    mats = _write_chain(tmp_path / "c.npz", 4, 48, seed=3)
    stored = {k: np.asfortranarray(v) if layout == "F" else v.astype(layout) if layout in (">f8", "float32") else v
              for k, v in mats.items()}
    # In memory, the same arrays: their stored dtype is recorded too (a big-endian float64 is "float64").
    mats = {k: v.astype(np.float64) if layout == ">f8" else v for k, v in stored.items()}
    path = tmp_path / ("c.safetensors" if layout == "safetensors" else "c.npz")
    if layout == "safetensors":
        pytest.importorskip("safetensors.numpy").save_file(stored, str(path))
    else:
        (np.savez_compressed if layout == "compressed" else np.savez)(path, **stored)
    chain = read_chain(path)
    assert (chain.factors[0]._matrix.where is not None) == (layout in ("C", "F", ">f8", "float32"))
    lazy = certify(chain)
    eager = certify(Chain.from_arrays(mats))
    a, b = _outputs(lazy, tmp_path, "lazy"), _outputs(eager, tmp_path, "eager")
    assert a == b
    # The certificates differ only in what they say of the source (a file, or matrices).
    ca, cb = dict(lazy.certificate), dict(eager.certificate)
    assert (ca.pop("source"), cb.pop("source")) == ("file", "matrices")
    assert ca == cb


def test_a_chain_file_changed_during_a_run_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    _write_chain(path, 3, 16)
    ch = read_chain(path)
    _write_chain(path, 3, 16, seed=1)  # rewritten in place after the chain was read
    os.utime(path, ns=(1, 1))  # whatever the clock's resolution, the modification time differs
    with pytest.raises(physgsa.ChainFileError, match=r"c\.npz' changed during the run"):
        certify(ch)
    path.unlink()
    with pytest.raises(physgsa.ChainFileError, match="moved or deleted during the run"):
        certify(ch)


class _Counted(Deferred):
    """A deferred matrix that counts how often it is read (module level: it must pickle)."""

    reads: dict = {}

    def __init__(self, name, matrix):
        self.name, self.m, self.shape = name, matrix, matrix.shape

    def read(self):
        _Counted.reads[self.name] = _Counted.reads.get(self.name, 0) + 1
        out = self.m.copy()
        out.setflags(write=False)
        return out


def _counted_chain(n_factors, width, seed=0):
    rng = np.random.default_rng(seed)
    fs = [physgsa.Factor(name=f"f{i}", matrix=_Counted(f"f{i}", np.eye(width) + 0.2 * rng.standard_normal(
        (width, width)) / np.sqrt(width))) for i in range(n_factors)]
    return Chain.from_factors(fs)


def test_each_factor_is_read_twice_once_to_hash_and_once_to_decompose():
    _Counted.reads.clear()
    certify(_counted_chain(5, 24))
    assert _Counted.reads == {f"f{i}": 2 for i in range(5)}


@pytest.mark.parametrize("n_factors", [4, 12])
def test_at_most_two_spectra_are_alive_at_any_time(monkeypatch, n_factors):
    # Memory set by one interface, not by depth: each spectrum is released after its last interface.
    live, peak = set(), [0]
    real = pipeline.compute_spectrum

    def tracked(factor, **kw):
        s = real(factor, **kw)
        key = (factor.name, id(s))
        live.add(key)
        peak[0] = max(peak[0], len(live))
        weakref.finalize(s, live.discard, key)
        return s

    monkeypatch.setattr(pipeline, "compute_spectrum", tracked)
    res = certify(_counted_chain(n_factors, 16))
    gc.collect()
    assert len(res.interfaces) == n_factors - 1
    assert peak[0] == 2, peak[0]
    assert not live  # nothing kept once the run is over


def _tiny_llama(folder, seed, width):
    """A seeded LlamaForCausalLM of 2 layers (grouped-query attention at width 32), saved to ``folder``."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=width, intermediate_size=3 * width // 2, num_hidden_layers=2,
                                   num_attention_heads=width // 8, num_key_value_heads=2, vocab_size=50)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    return model


def test_a_transformer_checkpoint_file_gives_deferred_factors_equal_to_the_in_memory_ones(tmp_path):
    torch = pytest.importorskip("torch")
    from physgsa.models import load_chain

    model = _tiny_llama(tmp_path / "m", 0, 32)
    for interfaces in ("blocks", "heads"):
        from_file = load_chain(str(tmp_path / "m"), interfaces=interfaces)
        in_memory = load_chain(model, interfaces=interfaces)
        assert [f.name for f in from_file.factors] == [f.name for f in in_memory.factors]
        assert all(f.deferred for f in from_file.factors)
        assert not any(f.deferred for f in in_memory.factors)
        for a, b in zip(from_file.factors, in_memory.factors):
            assert a.shape == b.shape and len(pickle.dumps(a)) < 64 * 1024
            np.testing.assert_array_equal(a.matrix, b.matrix)
        assert from_file.links == in_memory.links
    # Against the weights themselves (torch, float64): I + W_O repeat_kv(W_V) and I + W_down W_up.
    blocks = load_chain(str(tmp_path / "m"))
    eye = torch.eye(32, dtype=torch.float64)
    for l, layer in enumerate(model.model.layers):
        w_v = layer.self_attn.v_proj.weight.detach().double().reshape(2, 8, 32).repeat_interleave(2, dim=0)
        attn = eye + layer.self_attn.o_proj.weight.detach().double() @ w_v.reshape(32, 32)
        mlp = eye + layer.mlp.down_proj.weight.detach().double() @ layer.mlp.up_proj.weight.detach().double()
        np.testing.assert_allclose(blocks.factors[2 * l].matrix, attn.numpy(), rtol=0, atol=1e-13)
        np.testing.assert_allclose(blocks.factors[2 * l + 1].matrix, mlp.numpy(), rtol=0, atol=1e-13)


def test_a_quantized_weight_is_refused_when_the_chain_is_read_not_later(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    d = tmp_path / "m"
    d.mkdir()
    cfg = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 10}
    (d / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    w = {f"model.layers.0.self_attn.{p}_proj.weight": rng.standard_normal((8, 8)).astype(np.float32)
         for p in "qkvo"}
    w.update({"model.layers.0.mlp.up_proj.weight": rng.standard_normal((12, 8)).astype(np.float32),
              "model.layers.0.mlp.gate_proj.weight": rng.standard_normal((12, 8)).astype(np.float32),
              "model.layers.0.mlp.down_proj.weight": rng.standard_normal((8, 12)).astype(np.int8)})
    safetensors_numpy.save_file(w, str(d / "model.safetensors"))
    from physgsa.models import load_chain

    with pytest.raises(physgsa.PhysgsaError, match="down_proj.weight' .* is quantized"):
        load_chain(str(d))


def test_a_chain_file_larger_than_memory_is_read_when_each_factor_fits(tmp_path, monkeypatch):
    # Factors are read one at a time: the zip-bomb check weighs the largest member, not their sum.
    import physgsa.core.resources

    _write_chain(tmp_path / "c.npz", 6, 64)  # 6 members of 32 KiB
    monkeypatch.setattr(physgsa.core.resources, "available_memory", lambda: 100 << 10)  # limit 80 KiB
    assert len(read_chain(tmp_path / "c.npz").factors) == 6
    monkeypatch.setattr(physgsa.core.resources, "available_memory", lambda: 30 << 10)
    with pytest.raises(physgsa.ChainFileError, match="declares a member expanding to 32.1 KiB"):
        read_chain(tmp_path / "c.npz")


def test_a_checkpoint_rewritten_after_loading_is_refused_not_mixed(tmp_path):
    from physgsa.models import load_chain

    _tiny_llama(tmp_path / "m", 0, 16)
    chain = load_chain(str(tmp_path / "m"))
    _tiny_llama(tmp_path / "m", 1, 16)  # another checkpoint written over the first, after the chain was loaded
    os.utime(tmp_path / "m" / "model.safetensors", ns=(1, 1))
    with pytest.raises(physgsa.ChainFileError, match="model.safetensors' changed or disappeared"):
        certify(chain)


@pytest.mark.parametrize("how", [{"workers": 2}, {"dask_local": 2}])
def test_workers_read_a_deferred_chain_from_its_path_with_the_same_bytes(tmp_path, how):
    if "dask_local" in how:
        pytest.importorskip("distributed")
    _write_chain(tmp_path / "c.npz", 5, 32, seed=5)
    chain = read_chain(tmp_path / "c.npz")
    serial = _outputs(certify(chain), tmp_path, "serial")
    # Each task carries a reference of a few hundred bytes; the workers open the file themselves.
    assert serial == _outputs(certify(chain, **how), tmp_path, "parallel")

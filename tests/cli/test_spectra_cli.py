"""``physgsa spectra`` of a safetensors checkpoint needs no torch, and reading every weight into one
reused buffer changes no number (issue 15). Speed itself is measured in benchmarks/."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_startup import imported_by

_D, _LAYERS = 16, 2


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny GPT-2 (transformers' GPT2Model key names) as config.json plus model.safetensors."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    d = _D
    t = {"wte.weight": rng.standard_normal((50, d)), "wpe.weight": rng.standard_normal((32, d)),
         "ln_f.weight": np.ones(d), "ln_f.bias": np.zeros(d)}
    for layer in range(_LAYERS):
        p = f"h.{layer}."
        t.update({p + "ln_1.weight": np.ones(d), p + "attn.c_attn.weight": rng.standard_normal((d, 3 * d)),
                  p + "attn.c_attn.bias": np.zeros(3 * d), p + "attn.c_proj.weight": rng.standard_normal((d, d)),
                  p + "ln_2.weight": np.ones(d), p + "mlp.c_fc.weight": rng.standard_normal((d, 4 * d)),
                  p + "mlp.c_proj.weight": rng.standard_normal((4 * d, d))})
    folder = tmp_path_factory.mktemp("gpt2")
    # float32 as a checkpoint stores it, and one bfloat16-free float16 weight: each is widened exactly.
    tensors = {k: v.astype(np.float16 if k == "wpe.weight" else np.float32) for k, v in t.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": d, "n_layer": _LAYERS,
                                                    "n_head": 2, "n_positions": 32, "vocab_size": 50}))
    return folder


@pytest.mark.parametrize("target", ["folder", "file"])
def test_spectra_of_a_safetensors_checkpoint_imports_no_torch(tmp_path, gpt2_folder, target):
    model = gpt2_folder if target == "folder" else gpt2_folder / "model.safetensors"
    mods = imported_by(tmp_path, "spectra", str(model), "--out", str(tmp_path / "s"))
    table = pd.read_parquet(tmp_path / "s" / "spectra.parquet")
    assert len(table) == 2 + _LAYERS * 7  # wte, wpe; c_attn whole and Q, K, V, c_proj, c_fc, mlp c_proj
    assert not {"torch", "transformers", "safetensors"} & mods
    # Only what the command uses: none of certify's machinery.
    heavy = {"physgsa.runs.certify", "physgsa.core.certificate", "physgsa.core.transport", "physgsa.core.structure"}
    assert not heavy & mods


def test_weights_read_into_one_buffer_give_the_same_spectra(gpt2_folder):
    from physgsa.models import detect, resolve_source
    from physgsa.models.weights import raw_matrices
    from physgsa.runs.spectra import spectra_of

    src = resolve_source(str(gpt2_folder))
    arch = detect(src)
    assert arch == "gpt2"
    fresh = list(raw_matrices(src, arch))
    reused = raw_matrices(src, arch, reuse=True)
    n = 0
    for a, b in zip(fresh, reused):  # each reused matrix is compared before the next is read
        assert a.name == b.name and a.matrix.dtype == b.matrix.dtype == np.float64
        assert np.array_equal(a.matrix, b.matrix)
        n += 1
    assert n == len(fresh) == 2 + _LAYERS * 7
    plain = spectra_of(iter(fresh), source="x").table
    shared = spectra_of(raw_matrices(src, arch, reuse=True), source="x").table
    pd.testing.assert_frame_equal(plain, shared, check_exact=True)


def test_buffer_keeps_each_weights_memory_order(tmp_path):
    from physgsa.models.weights import NpzSource, raw_matrices

    rng = np.random.default_rng(2)
    np.savez(tmp_path / "w.npz", c=rng.standard_normal((6, 4)).astype(np.float32),
             f=np.asfortranarray(rng.standard_normal((5, 7))), k=np.asfortranarray(rng.standard_normal((3, 2, 3, 3))))
    src = NpzSource(tmp_path / "w.npz", "w.npz")
    fresh = list(raw_matrices(src, "unknown"))
    for a, b in zip(fresh, raw_matrices(src, "unknown", reuse=True)):
        assert a.name == b.name
        assert np.array_equal(a.matrix, b.matrix)
        assert (a.matrix.flags.c_contiguous, a.matrix.flags.f_contiguous) == \
            (b.matrix.flags.c_contiguous, b.matrix.flags.f_contiguous)
    assert [i.name for i in fresh] == ["c", "f", "k"]

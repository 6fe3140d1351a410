"""Units (matrices, heads, MLP slices), a change on one unit only, int3, and the Jacobian factors of
the units module (issue 23). Tiny models built from configs; the bundled configs only for the layout.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from physgsa.core.perturb import QUANT_FORMATS, apply_change, parse_change  # noqa: E402
from physgsa.models import units as U  # noqa: E402
from physgsa.models.changed import ChangedSource  # noqa: E402
from physgsa.models.load import load_chain  # noqa: E402
from physgsa.models.sources import TensorDictSource  # noqa: E402


def _rtn_groups(w: np.ndarray, qmax: float, g: int = 32) -> np.ndarray:
    """Independent symmetric absmax round-to-nearest, groups of ``g`` along each row (the input axis)."""
    out = np.empty_like(w, dtype=np.float64)
    for i in range(w.shape[0]):
        for j in range(0, w.shape[1], g):
            blk = w[i, j:j + g].astype(np.float64)
            amax = float(np.abs(blk).max())
            if amax == 0:
                out[i, j:j + g] = 0.0
                continue
            s = amax / qmax
            out[i, j:j + g] = [s * min(max(float(np.round(v / s)), -qmax), qmax) for v in blk]
    return out


def _gpt(n_head=2, n_embd=16, n_layer=2):
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _vit():
    cfg = transformers.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=16, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=32, num_labels=10)
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(cfg).eval()


# -- int3 ----------------------------------------------------------------------------------------

def test_int3_is_a_format_and_matches_an_independent_group32_quantizer():
    assert "int3" in QUANT_FORMATS
    change = parse_change(quantize="int3", group_size=32)
    assert change.label() == "int3-group32"
    w = np.random.default_rng(3).standard_normal((5, 70))  # rows = out, 70 inputs: groups 32, 32, 6
    w[2, 32:64] = 0.0  # a zero group stays zero
    got = apply_change(w, change)
    np.testing.assert_array_equal(got, _rtn_groups(w, 3.0))
    assert len(np.unique(np.round(got[0, :32] / (np.abs(w[0, :32]).max() / 3)))) <= 7  # levels -3..3


def test_int3_of_a_stored_in_out_matrix_groups_along_its_input_axis():
    w_out_in = np.random.default_rng(4).standard_normal((6, 40))
    got = apply_change(w_out_in.T.copy(), parse_change(quantize="int3", group_size=32), in_out=True)
    np.testing.assert_array_equal(got.T, _rtn_groups(w_out_in, 3.0))


# -- units ---------------------------------------------------------------------------------------

def test_gpt2_units_heads_and_slices_from_the_config():
    model = _gpt(n_head=4, n_embd=16, n_layer=2)
    us = U.units(model)
    assert len(us) == 2 * (6 + 4 + U.MLP_SLICES)
    head = next(u for u in us if u.name == "layer1.head2")
    d, dh = 16, 4
    assert head.depth == 1 and head.kind == "head"
    assert head.parts == (("transformer.h.1.attn.c_attn.weight", slice(8, 12), None),
                          ("transformer.h.1.attn.c_attn.weight", slice(d + 8, d + 12), None),
                          ("transformer.h.1.attn.c_attn.weight", slice(2 * d + 8, 2 * d + 12), None),
                          ("transformer.h.1.attn.c_proj.weight", None, slice(2 * dh, 3 * dh)))
    mlp = next(u for u in us if u.name == "layer0.mlp1")
    assert mlp.parts == (("transformer.h.0.mlp.c_fc.weight", slice(16, 32), None),
                         ("transformer.h.0.mlp.c_proj.weight", None, slice(16, 32)))


def test_a_head_change_touches_only_its_stored_entries():
    model = _gpt(n_head=4, n_embd=16)
    src = U.weight_source(model)
    head = next(u for u in U.units(src) if u.name == "layer0.head1")
    new = U.changed_weights(src, head, parse_change(prune="magnitude:0.5"))
    attn = src.get("transformer.h.0.attn.c_attn.weight")  # stored (in, out) = (16, 48)
    proj = src.get("transformer.h.0.attn.c_proj.weight")  # stored (in, out) = (16, 16)
    cols = np.r_[4:8, 20:24, 36:40]  # Q, K, V outputs of head 1
    diff = new["transformer.h.0.attn.c_attn.weight"] != attn
    assert not diff[:, np.setdiff1d(np.arange(48), cols)].any()
    # each block (16 inputs x 4 outputs) loses half of its 64 entries, its smallest
    for c in (np.r_[4:8], np.r_[20:24], np.r_[36:40]):
        blk = new["transformer.h.0.attn.c_attn.weight"][:, c]
        assert int((blk == 0).sum()) == 32
        kept = np.abs(attn[:, c])[blk != 0]
        assert kept.min() >= np.abs(attn[:, c])[blk == 0].max()
    dproj = new["transformer.h.0.attn.c_proj.weight"] != proj  # O's input columns of head 1 = stored rows 4:8
    assert not dproj[np.r_[0:4, 8:16]].any() and int((new["transformer.h.0.attn.c_proj.weight"][4:8] == 0).sum()) == 32


def test_a_matrix_unit_quantizes_only_its_rows_in_groups_along_the_input_axis():
    model = _gpt(n_head=2, n_embd=40, n_layer=1)
    src = U.weight_source(model)
    k = next(u for u in U.units(src) if u.name == "layer0.k")
    new = U.changed_weights(src, k, parse_change(quantize="int3", group_size=32))
    stored = src.get("transformer.h.0.attn.c_attn.weight")  # (40, 120) (in, out)
    got = new["transformer.h.0.attn.c_attn.weight"]
    np.testing.assert_array_equal(got[:, :40], stored[:, :40])
    np.testing.assert_array_equal(got[:, 80:], stored[:, 80:])
    np.testing.assert_array_equal(got[:, 40:80].T, _rtn_groups(stored[:, 40:80].T.astype(np.float64), 3.0))


def test_the_unit_source_changes_the_static_chain_as_the_substituted_weights_do():
    model = _gpt(n_head=2, n_embd=16)
    src = U.weight_source(model)
    unit = next(u for u in U.units(src) if u.name == "layer1.mlp2")
    change = parse_change(quantize="int3", group_size=32)
    state = {k: torch.as_tensor(src.get(k)) for k in src.keys()}
    state.update({k: torch.as_tensor(v) for k, v in U.changed_weights(src, unit, change).items()})
    by_hand = load_chain(TensorDictSource(state, src.config, "by hand"))
    via = load_chain(U.unit_source(src, unit, change))
    base = load_chain(src)
    assert isinstance(U.unit_source(src, unit, change), ChangedSource)
    for a, b, c in zip(by_hand.factors, via.factors, base.factors):
        np.testing.assert_allclose(b.matrix, a.matrix, rtol=0, atol=1e-12)
        assert np.array_equal(b.matrix, c.matrix) == (not b.name.startswith("blocks.1.mlp"))


def test_vit_units_read_old_and_new_names_from_the_config():
    us = U.units(_vit())
    assert len(us) == 2 * (6 + 2 + U.MLP_SLICES)
    assert {u.kind for u in us} == set(U.UNIT_KINDS)


@pytest.mark.parametrize("name", ["digits-vit", "pysource-gpt"])
def test_at_least_24_units_on_the_bundled_layouts(name):
    # built from the bundled config (initial weights): the layout is all units need, no training
    from physgsa.models.bundled.trained import build_model

    model = build_model(name)
    us = U.units(model)
    cfg = model.config
    layers, heads = (cfg.num_hidden_layers, cfg.num_attention_heads) if name == "digits-vit" else (cfg.n_layer,
                                                                                                   cfg.n_head)
    assert len(us) >= 24
    assert sum(u.kind == "head" for u in us) == layers * heads
    assert sorted({u.depth for u in us}) == list(range(layers))


# -- Jacobian factors ----------------------------------------------------------------------------

def test_vit_sublayers_compose_to_the_models_hidden_states():
    model = _vit().double()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x0, subs = U._vit_sublayers(model.vit, {"pixel_values": x})
    with torch.no_grad():
        hs = model.vit(pixel_values=x, output_hidden_states=True).hidden_states
        h = x0
        for i, (_, f, _) in enumerate(subs):
            h = f(h)
            if i % 2 == 1:
                np.testing.assert_allclose(h.numpy(), hs[i // 2 + 1][0].numpy(), rtol=0, atol=1e-12)


def test_vit_jacobian_factor_against_central_differences():
    model = _vit()
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    chain = U.attention_chain(model, [{"pixel_values": x}])
    work = model.double()
    x0, subs = U._vit_sublayers(work.vit, {"pixel_values": x})
    _, f, _ = subs[0]  # blocks.0.attn
    eps = 1e-6
    col = []
    with torch.no_grad():
        for c in range(16):
            e = torch.zeros(16, dtype=torch.float64)
            e[c] = eps
            col.append(((f(x0 + e) - f(x0 - e)) / (2 * eps)).mean(dim=0).numpy())
    np.testing.assert_allclose(chain.factors[0].matrix, np.stack(col, axis=1), rtol=0, atol=1e-7)


def test_reused_factors_before_the_units_layer_equal_a_full_recomputation():
    model = _gpt(n_head=2, n_embd=16)
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(0))
    inputs = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
    unit = next(u for u in U.units(model) if u.name == "layer1.k")
    change = parse_change(quantize="int3", group_size=32)
    base = U.factor_chain(model, model=model, inputs=inputs)
    full = U.factor_chain(model, unit, change, model=model, inputs=inputs)
    fast = U.factor_chain(model, unit, change, model=model, inputs=inputs, base=base)
    for a, b, c in zip(full.factors, fast.factors, base.factors):
        np.testing.assert_array_equal(a.matrix, b.matrix)
        # layer 0 is unchanged; the key projection of layer 1 moves blocks.1.attn (softmax) and after
        assert np.array_equal(a.matrix, c.matrix) == a.name.startswith("blocks.0.")


def test_training_inputs_come_from_the_training_split():
    from physgsa.models.bundled.digits import digits_data
    from physgsa.models.bundled.trained import stdlib_corpus

    imgs, _ = U.training_inputs("digits-vit", n=3, seed=5)
    train, _, test, _ = digits_data()
    for enc in imgs:
        x = enc["pixel_values"][0]
        assert any(torch.equal(x, t) for t in train)
    corpus = stdlib_corpus()[0]
    cut = int(0.9 * len(corpus))  # the first 90% train (models/bundled/trained.py)
    seqs, _ = U.training_inputs("pysource-gpt", n=3, seed=5)
    for enc in seqs:
        window = bytes(enc["input_ids"][0].tolist())
        assert len(window) == 64 and corpus[:cut].find(window) >= 0
    again, _ = U.training_inputs("pysource-gpt", n=3, seed=5)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(seqs, again))

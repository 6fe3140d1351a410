"""Jacobian mode: per-token and channel Jacobians against torch.autograd.functional.jacobian."""

import numpy as np
import torch
import transformers

from physgsa.adapters import load_chain
from physgsa.adapters.digits import _model
from physgsa.adapters.jacobian import _embed, _sublayers, channel_jacobian, per_token_jacobian

torch.manual_seed(0)


def diag_mean(full):
    """mean_t of the (t, t) blocks of a (T, d, T, d) Jacobian."""
    t_len = full.shape[0]
    return sum(full[t, :, t, :] for t in range(t_len)).numpy() / t_len


def test_per_token_jacobians_match_autograd_gpt2_and_bert():
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=30,
                                                          bos_token_id=0, eos_token_id=0,
                                                          attn_implementation="eager")).eval().double()
    bert = transformers.BertModel(transformers.BertConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                                          intermediate_size=32, vocab_size=30,
                                                          attn_implementation="eager")).eval().double()
    ids = torch.tensor([[3, 7, 1, 9, 4, 2]])
    for model in (gpt2, bert):
        with torch.no_grad():
            x = _embed(model, ids)[0]
        for factor in ("full", "branch"):
            for name, f in _sublayers(model, factor)[0]:
                ref = diag_mean(torch.autograd.functional.jacobian(f, x))
                ours = per_token_jacobian(f, x, local=name.endswith(".mlp"))
                np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
    gpt2 = gpt2.float()
    chain = load_chain(gpt2, mode="jacobian", inputs="random")
    assert [f.name for f in chain.factors] == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    assert chain.factors[0].provenance == {"source": "jacobian", "kind": "full", "inputs": "random token ids (flagged)"}
    assert next(gpt2.parameters()).dtype == torch.float32  # the caller's module is untouched


def test_channel_jacobian_matches_autograd_on_the_digits_resnet():
    model = _model().eval().double()
    x = torch.rand(1, 16, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    blk = model.layer2[0]
    full = torch.autograd.functional.jacobian(blk, x)  # (1, C', H', W', 1, C, H, W)
    ref = full.sum(dim=(6, 7)).mean(dim=(2, 3))[0, :, 0, :].numpy()
    np.testing.assert_allclose(channel_jacobian(blk, x), ref, atol=1e-6, rtol=0)


def test_digits_resnet_jacobian_chain_uses_real_images(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    chain = load_chain("digits-resnet", mode="jacobian")
    assert [f.shape for f in chain.factors] == [(16, 16), (32, 16), (64, 32)]
    assert chain.factors[0].provenance["inputs"] == "digits test images"
    branch = load_chain("digits-resnet", mode="jacobian", factor="branch")
    assert not np.allclose(branch.factors[0].matrix, chain.factors[0].matrix)

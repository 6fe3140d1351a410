"""Issue 24, items 13, 14 and 28: exact float64 buffers in Jacobian mode, digits-resnet under a
float64 default dtype, and simulated quantization in the (out, in) orientation the adapters read.

Every reference here is independent of the code under test: the rotary frequencies and Gemma's
embedding scale from their formulas, the Jacobians by autograd of the model's own forward, and
the quantizer written out below.
"""

import math

import numpy as np
import pytest
import torch
import transformers

from physgsa.core.perturb import parse_change
from physgsa.models import load_chain, resolve_source
from physgsa.models.changed import ChangedSource
from physgsa.models.jacobian import jacobian_chain
from physgsa.models.registry import TRAINED
from torch_helpers import Float64

transformers.logging.set_verbosity_error()

F64 = torch.float64


# --------------------------------------------------------------------------- item 13: float64 buffers



LLMS = {  # family: (config class, model class, extra config, where the attention sublayer's sum is read)
    "llama": ("LlamaConfig", "LlamaModel", {"rope_theta": 12345.678}, "post_attention_layernorm"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3TextModel",
                    {"head_dim": 8, "sliding_window": 3, "layer_types": ["sliding_attention", "full_attention"]},
                    "pre_feedforward_layernorm"),
}


def tiny_llm(family):
    cfg_name, model_name, extra, _ = LLMS[family]
    torch.manual_seed(0)
    # initializer_range 0.3: peaked attention, so the rotary angles move the factors visibly.
    cfg = getattr(transformers, cfg_name)(hidden_size=24, intermediate_size=32, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=1, vocab_size=40,
                                          max_position_embeddings=64, pad_token_id=0, bos_token_id=0, eos_token_id=1,
                                          initializer_range=0.3, attn_implementation="eager", **extra)
    return getattr(transformers, model_name)(cfg).eval()


def exact_reference(model):
    """A float64 copy whose derived buffers come from their formulas in float64 (not the float32 rounding)."""
    ref = type(model)(model.config).eval()
    ref.load_state_dict(model.state_dict())
    ref = ref.double()
    cfg = ref.config
    rot = ref.rotary_emb
    dim = cfg.head_dim
    with torch.no_grad():
        for name, buf in list(rot.named_buffers()):
            theta = (cfg.rope_parameters[name.split("_inv_freq")[0].replace("_original", "")]["rope_theta"]
                     if name.count("attention") else cfg.rope_parameters["rope_theta"])
            buf.copy_(1.0 / theta ** (torch.arange(0, dim, 2, dtype=F64) / dim))
        emb = ref.embed_tokens
        if hasattr(emb, "embed_scale"):
            emb.embed_scale.copy_(torch.tensor(math.sqrt(cfg.hidden_size), dtype=F64))
    return ref


def random_encodings(vocab):
    """jacobian_chain's documented random inputs: 4 sequences of 8 ids, from seed 0."""
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (1, 8), generator=g) for _ in range(4)]


def attn_reference(ref, ids, l, read):
    """The uniform reduction of layer l's full attention sublayer, by autograd of the model's forward."""
    layer = ref.layers[l]
    box = {}

    def keep(mod, args, kwargs):
        box.setdefault("x", (args[0] if args else kwargs["hidden_states"])[0].detach())

    h = layer.register_forward_pre_hook(keep, with_kwargs=True)
    with torch.no_grad(), Float64():
        ref(input_ids=ids, use_cache=False)
    h.remove()
    x = box["x"]

    class Stop(Exception):
        pass

    def f(v):
        out = {}

        def put(mod, args, kwargs):
            if args:
                return (v[None],) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": v[None]}

        def grab(mod, args):
            out["y"] = args[0][0]
            raise Stop

        hs = [layer.register_forward_pre_hook(put, with_kwargs=True),
              getattr(layer, read).register_forward_pre_hook(grab)]
        try:
            ref(input_ids=ids, use_cache=False)
        except Stop:
            pass
        finally:
            for hh in hs:
                hh.remove()
        return out["y"]

    with Float64():
        j = torch.autograd.functional.jacobian(f, x, vectorize=True)
    return j.sum(dim=(0, 2)).numpy() / x.shape[0]


@pytest.mark.parametrize("family", list(LLMS))
def test_jacobian_factors_use_float64_rotary_and_embedding_scale(family):
    model = tiny_llm(family)
    ref = exact_reference(model)
    # The float32 buffers really are rounded (else this test would show nothing).
    for (name, b32), (_, b64) in zip(model.rotary_emb.named_buffers(), ref.rotary_emb.named_buffers()):
        assert not torch.equal(b32.double(), b64), name
    chain = jacobian_chain(model, inputs="random")
    got = {f.name: f.matrix for f in chain.factors}
    read = LLMS[family][3]
    encs = random_encodings(model.config.vocab_size)
    for l in range(model.config.num_hidden_layers):
        want = sum(attn_reference(ref, ids, l, read) for ids in encs) / len(encs)
        err = np.max(np.abs(got[f"blocks.{l}.attn"] - want)) / np.max(np.abs(want))
        assert err < 1e-12, (family, l, err)
    # The caller's module is left as it was (float32 buffers included).
    assert all(b.dtype == torch.float32 for b in model.buffers() if b.is_floating_point())


# --------------------------------------------------------------------------- item 14: digits-resnet, float64 default

def test_digits_resnet_under_a_float64_default_dtype(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from physgsa.models.bundled import digits

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = digits.untrained_model()
        # The step that crashed: one training step on the float32 data.
        x, y, _, _ = digits.digits_data()
        torch.nn.functional.cross_entropy(model.train()(x[:8]), y[:8]).backward()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        # First use with a cached file (training itself takes too long for a test): loads and runs.
        state = {k: v.contiguous() for k, v in digits.untrained_model().state_dict().items()}
        digits.cache_path().parent.mkdir(parents=True)
        save_file(state, str(digits.cache_path()), metadata={"test_correct": "1", "test_total": "2"})
        loaded = digits.digits_resnet()
        with torch.no_grad():
            assert loaded(digits.digits_data()[2][:4]).shape == (4, 10)
        assert digits.held_out_accuracy(loaded)[1] == digits.digits_data()[3].shape[0]
    finally:
        torch.set_default_dtype(old)


def test_bundled_trained_models_are_built_in_float32_under_a_float64_default():
    from physgsa.models.bundled import trained

    want = {name: trained.build_model(name).state_dict() for name in TRAINED}
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for name, ref in want.items():
            got = trained.build_model(name).state_dict()
            assert torch.get_default_dtype() == torch.float64
            for key, value in ref.items():
                assert got[key].dtype == value.dtype and torch.equal(got[key], value), (name, key)
    finally:
        torch.set_default_dtype(old)


# --------------------------------------------------------------------------- item 28: quantization orientation

def reference_quantize(w_out_in, *, group=None, channel=False, qmax=7.0):
    """Symmetric round-to-nearest of an (out, in) matrix: per group of ``group`` inputs of each output row,
    or per output row (``channel``)."""
    w = np.asarray(w_out_in, dtype=np.float64)
    out = np.empty_like(w)
    for r in range(w.shape[0]):
        spans = ([(c, min(c + group, w.shape[1])) for c in range(0, w.shape[1], group)] if group
                 else [(0, w.shape[1])])
        assert group or channel
        for a, b in spans:
            blk = w[r, a:b]
            amax = np.max(np.abs(blk))
            s = amax / qmax if amax > 0 else 1.0
            out[r, a:b] = np.clip(np.round(blk / s), -qmax, qmax) * s
    return out


def gpt2_folder(path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=64, n_head=2, n_positions=16, vocab_size=30, bos_token_id=0,
                                  eos_token_id=0)
    transformers.GPT2Model(cfg).save_pretrained(path)
    return path


def llama_folder(path):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=30, pad_token_id=0, bos_token_id=0,
                                   eos_token_id=1)
    transformers.LlamaModel(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("args,ref", [
    (dict(quantize="int4", group_size=32), dict(group=32)),
    (dict(quantize="int4", granularity="channel"), dict(channel=True)),
])
def test_quantization_groups_along_the_input_axis_of_each_architecture(tmp_path, args, ref):
    change = parse_change(**args)
    # GPT-2's Conv1D stores (in, out): the (out, in) matrix the adapter reads is its transpose.
    src = resolve_source(gpt2_folder(tmp_path / "gpt2"))
    changed = ChangedSource(src, change)
    for key in ("h.0.mlp.c_fc.weight", "h.0.mlp.c_proj.weight", "h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight"):
        stored = src.get(key)
        np.testing.assert_array_equal(changed.get(key), reference_quantize(stored.T, **ref).T, err_msg=key)
    # The GPT-2 MLP branch factor W_out W_in is built from the weights quantized that way.
    w_in = reference_quantize(src.get("h.0.mlp.c_fc.weight").T, **ref)
    w_out = reference_quantize(src.get("h.0.mlp.c_proj.weight").T, **ref)
    got = {f.name: f.matrix for f in load_chain(changed, factor="branch").factors}["blocks.0.mlp"]
    np.testing.assert_allclose(got, w_out @ w_in, rtol=0, atol=1e-12 * np.max(np.abs(w_out @ w_in)))
    # LLaMA's Linear weights are stored (out, in) already.
    src = resolve_source(llama_folder(tmp_path / "llama"))
    changed = ChangedSource(src, change)
    for key in ("layers.0.mlp.up_proj.weight", "layers.0.mlp.down_proj.weight", "layers.0.self_attn.v_proj.weight",
                "layers.0.self_attn.o_proj.weight"):
        np.testing.assert_array_equal(changed.get(key), reference_quantize(src.get(key), **ref), err_msg=key)

"""The LLaMA family (transformers): LLaMA, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3 (text), Phi-3.

All are pre-norm decoders whose blocks add ``Attn(norm(x))`` and ``MLP(norm(x))`` to the
residual stream, with grouped-query attention (``num_key_value_heads`` KV heads shared by
groups of query heads) and a gated MLP ``W_down (act(W_gate x) * W_up x)``. Static factors,
per block ``l`` (ours, docs/definitions.md):

- ``blocks.{l}.attn``: ``R = W_O repeat(W_V) = sum_h W_O[:, h] W_V[kv(h)]``, each query head's
  OV circuit through the KV head it shares (``_transformer``); full ``I + R``.
- ``blocks.{l}.mlp``: ``R = W_down W_up``, the gate taken as the constant 1 (its value at
  ``x = 0`` is ``act(0) = 0`` for SiLU and tanh-GELU, which would make the factor vanish);
  full ``I + R``. ``W_gate`` is listed as skipped with the reason.
- norms left out, as for every static transformer factor: RMSNorm's scale (Gemma's
  ``1 + weight``), Gemma 2/3's post-attention and post-feed-forward norms, Qwen3/Gemma 3's
  Q/K norms (those act on the pattern only).

Phi-3 fuses ``qkv_proj`` (split at ``n_heads * head_dim`` and ``n_kv * head_dim``) and
``gate_up_proj`` (``[gate; up]``, split at ``intermediate_size``). The layout is read with the
model's own config class (transformers' registry, never code from the folder), so a
config.json that omits a key gets the class's default exactly as transformers would:
``num_key_value_heads`` defaults to ``num_attention_heads``, and ``head_dim`` to the config's
value or ``hidden_size // num_attention_heads`` where the class has none (Qwen2), as the
attention modules compute it.
"""

from __future__ import annotations

from ._modern import hf_config, positive
from ._transformer import Layout, TransformerSpec, transformer_chain
from .registry import Adapter, config_matcher
from .sources import ModelSourceError, WeightSource

__all__ = ["FAMILIES", "chain", "layout", "ADAPTER"]

#: model_type -> what is special about it (for messages and docs).
FAMILIES = {
    "llama": "LLaMA",
    "mistral": "Mistral",
    "qwen2": "Qwen2 (Q/K/V biases: offsets, not in the factor)",
    "qwen3": "Qwen3 (Q/K norms: pattern only)",
    "gemma": "Gemma (RMSNorm scale 1 + weight, left out)",
    "gemma2": "Gemma 2 (sandwich norms, left out)",
    "gemma3_text": "Gemma 3 text (sandwich and Q/K norms, left out)",
    "phi3": "Phi-3 (fused qkv_proj and gate_up_proj, split by the config)",
}

_LAYERS = "layers.{l}."

SPEC = TransformerSpec(
    name="llama",
    layers="num_hidden_layers",
    heads="num_attention_heads",
    width="hidden_size",
    q=(_LAYERS + "self_attn.q_proj.weight",),
    k=(_LAYERS + "self_attn.k_proj.weight",),
    v=(_LAYERS + "self_attn.v_proj.weight",),
    o=(_LAYERS + "self_attn.o_proj.weight",),
    mlp_in=(_LAYERS + "mlp.up_proj.weight",),
    mlp_gate=(_LAYERS + "mlp.gate_proj.weight",),
    mlp_out=(_LAYERS + "mlp.down_proj.weight",),
)

PHI3_SPEC = TransformerSpec(
    name="phi3",
    layers="num_hidden_layers",
    heads="num_attention_heads",
    width="hidden_size",
    qkv=(_LAYERS + "self_attn.qkv_proj.weight",),
    o=(_LAYERS + "self_attn.o_proj.weight",),
    gate_up=(_LAYERS + "mlp.gate_up_proj.weight",),
    mlp_out=(_LAYERS + "mlp.down_proj.weight",),
)



def layout(src: WeightSource) -> Layout:
    """Layers, heads, KV heads, head size, width and MLP width, as the config class gives them."""
    cfg = hf_config(src)
    where = src.name
    n_layers = positive(cfg, "num_hidden_layers", where)
    n_heads = positive(cfg, "num_attention_heads", where)
    width = positive(cfg, "hidden_size", where)
    n_kv = positive(cfg, "num_key_value_heads", where, getattr(cfg, "num_key_value_heads", None) or n_heads)
    head_dim = getattr(cfg, "head_dim", None)
    if head_dim is None:  # the attention modules' own fallback
        if width % n_heads:
            raise ModelSourceError(f"The config of {where} gives hidden_size {width}, not divisible by {n_heads} "
                                   "heads, and no head_dim.")
        head_dim = width // n_heads
    head_dim = positive(cfg, "head_dim", where, head_dim)
    if n_heads % n_kv:
        raise ModelSourceError(f"The config of {where} gives {n_heads} attention heads, not a multiple of its "
                               f"{n_kv} key/value heads.")
    inter = positive(cfg, "intermediate_size", where)
    return Layout(n_layers, n_heads, n_kv, head_dim, width, inter)


def chain(src: WeightSource, *, factor: str, interfaces: str):
    spec = PHI3_SPEC if src.config.get("model_type") == "phi3" else SPEC
    return transformer_chain(src, spec, factor=factor, interfaces=interfaces, layout=layout(src))


ADAPTER = Adapter(matches=config_matcher(*FAMILIES), chain=chain)

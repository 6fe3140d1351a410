"""DiT (diffusers ``DiTTransformer2DModel``): self-attention ``attn1`` and the feed-forward ``ff``."""

from functools import partial

from ._transformer import TransformerSpec, transformer_chain
from .registry import Adapter, config_matcher

SPEC = TransformerSpec(
    name="dit",
    layers="num_layers",
    heads="num_attention_heads",
    width=("num_attention_heads", "attention_head_dim"),
    q=("transformer_blocks.{l}.attn1.to_q.weight",),
    k=("transformer_blocks.{l}.attn1.to_k.weight",),
    v=("transformer_blocks.{l}.attn1.to_v.weight",),
    o=("transformer_blocks.{l}.attn1.to_out.0.weight",),
    mlp_in=("transformer_blocks.{l}.ff.net.0.proj.weight",),
    mlp_out=("transformer_blocks.{l}.ff.net.2.weight",),
)


ADAPTER = Adapter(matches=config_matcher("DiTTransformer2DModel", key="_class_name"),
                  chain=partial(transformer_chain, spec=SPEC))

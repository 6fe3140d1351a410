"""ViT (transformers ``ViTModel``): both the transformers 5 names and the older checkpoint names."""

from functools import partial

from ._transformer import TransformerSpec, transformer_chain
from .registry import Adapter, config_matcher

SPEC = TransformerSpec(
    name="vit",
    layers="num_hidden_layers",
    heads="num_attention_heads",
    width="hidden_size",
    q=("layers.{l}.attention.q_proj.weight", "encoder.layer.{l}.attention.attention.query.weight"),
    k=("layers.{l}.attention.k_proj.weight", "encoder.layer.{l}.attention.attention.key.weight"),
    v=("layers.{l}.attention.v_proj.weight", "encoder.layer.{l}.attention.attention.value.weight"),
    o=("layers.{l}.attention.o_proj.weight", "encoder.layer.{l}.attention.output.dense.weight"),
    mlp_in=("layers.{l}.mlp.fc1.weight", "encoder.layer.{l}.intermediate.dense.weight"),
    mlp_out=("layers.{l}.mlp.fc2.weight", "encoder.layer.{l}.output.dense.weight"),
)


ADAPTER = Adapter(matches=config_matcher("vit"), chain=partial(transformer_chain, spec=SPEC))

"""BERT and MiniLM (transformers ``BertModel`` and its task heads): static factors."""

from functools import partial

from ._transformer import TransformerSpec, transformer_chain
from .registry import Adapter, config_matcher

SPEC = TransformerSpec(
    name="bert",
    layers="num_hidden_layers",
    heads="num_attention_heads",
    width="hidden_size",
    q=("encoder.layer.{l}.attention.self.query.weight",),
    k=("encoder.layer.{l}.attention.self.key.weight",),
    v=("encoder.layer.{l}.attention.self.value.weight",),
    o=("encoder.layer.{l}.attention.output.dense.weight",),
    mlp_in=("encoder.layer.{l}.intermediate.dense.weight",),
    mlp_out=("encoder.layer.{l}.output.dense.weight",),
)


ADAPTER = Adapter(matches=config_matcher("bert", "roberta"), chain=partial(transformer_chain, spec=SPEC))

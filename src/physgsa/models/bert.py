"""BERT and MiniLM (transformers ``BertModel`` and its task heads): static factors."""

from ._transformer import TransformerSpec

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


def matches(config: dict) -> bool:
    return config.get("model_type") in ("bert", "roberta")

"""GPT-2 (transformers ``GPT2Model``): Conv1D weights are stored (in, out) and Q, K, V are fused."""

from functools import partial

from ._transformer import TransformerSpec, transformer_chain
from .registry import Adapter, config_matcher

SPEC = TransformerSpec(
    name="gpt2",
    layers="n_layer",
    heads="n_head",
    width="n_embd",
    qkv=("h.{l}.attn.c_attn.weight",),
    o=("h.{l}.attn.c_proj.weight",),
    mlp_in=("h.{l}.mlp.c_fc.weight",),
    mlp_out=("h.{l}.mlp.c_proj.weight",),
    transposed=True,
)


ADAPTER = Adapter(matches=config_matcher("gpt2"), chain=partial(transformer_chain, spec=SPEC))

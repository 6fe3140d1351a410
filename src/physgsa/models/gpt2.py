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


#: The Conv1D modules of GPT2Model (``q_attn``: cross-attention), whose weights are stored (in, out).
_CONV1D = ("c_attn", "q_attn", "c_proj", "c_fc")


def stored_in_out(key: str) -> bool:
    """A GPT-2 weight stored (in, out): a Conv1D's (every 2-D weight but the embeddings and ``lm_head``)."""
    parts = key.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in _CONV1D


ADAPTER = Adapter(matches=config_matcher("gpt2"), chain=partial(transformer_chain, spec=SPEC),
                  stored_in_out=stored_in_out)

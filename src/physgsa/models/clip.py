"""CLIP (transformers ``CLIPModel``, ``CLIPTextModel``, ``CLIPVisionModel`` and their
``WithProjection`` variants): pre-LN encoder towers, static factors as for GPT-2.

Per block ``l`` of a tower: ``blocks.{l}.attn`` with ``R = W_out W_V`` (``out_proj``, ``v_proj``)
and ``blocks.{l}.mlp`` with ``R = W_fc2 W_fc1`` (quick-GELU linearized as the identity), full
``I + R``; LayerNorms left out (as for every static transformer factor). The text tower is
causal: its mask shapes the attention pattern only, so it does not enter the static factor
(Jacobian mode differentiates with the mask the model builds).

A ``CLIPModel`` holds both towers: the chain is the text tower's factors (``text.blocks.{l}.*``)
then the vision tower's (``vision.blocks.{l}.*``), with no interface between them (the vision
tower does not read the text tower's output): the chain breaks there and the break says so.
A single-tower checkpoint keeps the plain names ``blocks.{l}.*``. The layout of each tower is
read with transformers' own config classes (``CLIPConfig``'s ``text_config`` and
``vision_config``), so keys a config.json omits get the classes' defaults. The embeddings, the
pre/post LayerNorms and the projections are listed as skipped.
"""

from __future__ import annotations

from ._modern import hf_config, positive
from ._transformer import Layout, Tower, TransformerSpec, towers_chain
from .registry import Adapter, config_matcher
from .sources import ModelSourceError, WeightSource

__all__ = ["chain", "ADAPTER", "towers"]

_TYPES = {"clip": None, "clip_text_model": "text", "clip_vision_model": "vision"}



def _spec(prefix: str) -> TransformerSpec:
    p = prefix + "encoder.layers.{l}."
    return TransformerSpec(
        name="clip", layers="num_hidden_layers", heads="num_attention_heads", width="hidden_size",
        q=(p + "self_attn.q_proj.weight",), k=(p + "self_attn.k_proj.weight",),
        v=(p + "self_attn.v_proj.weight",), o=(p + "self_attn.out_proj.weight",),
        mlp_in=(p + "mlp.fc1.weight",), mlp_out=(p + "mlp.fc2.weight",),
    )


def _layout(cfg, where: str) -> Layout:
    n_layers = positive(cfg, "num_hidden_layers", where)
    n_heads = positive(cfg, "num_attention_heads", where)
    width = positive(cfg, "hidden_size", where)
    if width % n_heads:
        raise ModelSourceError(f"The config of {where} gives hidden_size {width}, not divisible by {n_heads} heads.")
    return Layout(n_layers, n_heads, n_heads, width // n_heads, width)


def towers(src: WeightSource) -> list[Tower]:
    """The towers of a CLIP checkpoint, in chain order (text, then vision)."""
    mt = src.config.get("model_type")
    cfg = hf_config(src)
    if _TYPES.get(mt) is not None:
        return [Tower(_spec(""), _layout(cfg, src.name), "", _TYPES[mt])]
    return [Tower(_spec(f"{kind}_model."), _layout(getattr(cfg, f"{kind}_config"), f"{src.name} ({kind}_config)"),
                  f"{kind}.", kind) for kind in ("text", "vision")]


def chain(src: WeightSource, *, factor: str, interfaces: str):
    return towers_chain(src, towers(src), factor=factor, interfaces=interfaces)


ADAPTER = Adapter(matches=config_matcher(*_TYPES), chain=chain)

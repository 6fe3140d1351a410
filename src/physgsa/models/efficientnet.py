"""EfficientNet (transformers ``EfficientNetModel`` and its task heads): MBConv blocks with
squeeze-excitation.

The layout is the encoder's: per base stage ``i`` (``in_channels``, ``out_channels``,
``strides``, ``kernel_sizes``, ``expand_ratios``) ``ceil(depth_coefficient *
num_block_repeats[i])`` blocks, widths rounded by ``width_coefficient`` / ``depth_divisor``;
the first block of a stage has the stage's stride and input width, the others stride 1.

Block ``blocks.{k}`` (ours, docs/definitions.md):
``R = D_p W_p diag(s_0) D_dw W_dw [D_e W_e]`` with the 1x1 expansion ``W_e`` (absent where
``expand_ratio = 1``), the depthwise conv ``W_dw`` (diagonal at zero frequency,
``_conv.grouped_channel_matrix``), the squeeze-excitation gate at zero input
``s_0 = sigmoid(W_expand swish(b_reduce) + b_expand)`` (the exact Jacobian of the SE module at
``x = 0``), the 1x1 projection ``W_p``; BatchNorms folded (eps = ``batch_norm_eps``), swish
linearized as the identity on the main path. The block adds its input exactly where the module
does: ``EfficientNetFinalBlockLayer.apply_dropout = stride == 1 and not id_skip``, i.e. in every
block but the first of each stage; full ``I + R`` there, ``R`` (``plain``) elsewhere. A block
that starts with its depthwise conv (``expand_ratio = 1``) carries that conv's groups as
``col_groups`` (one channel each). The stem, ``top_conv`` and the classifier are skipped.
"""

from __future__ import annotations

import math

from ._modern import Block, Ops, activation, build_chain, find_prefix, hf_config, positive, refuse_fft
from .registry import Adapter, config_matcher
from .sources import ModelSourceError, WeightSource

__all__ = ["chain", "layout", "ADAPTER"]



def _round_filters(cfg, channels: int) -> int:
    """The ``round_filters`` of transformers."""
    divisor = cfg.depth_divisor
    channels *= cfg.width_coefficient
    new = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if new < 0.9 * channels:
        new += divisor
    return int(new)


def layout(cfg, where: str) -> list[dict]:
    positive(cfg, "depth_divisor", where)
    lists = ("in_channels", "out_channels", "strides", "kernel_sizes", "expand_ratios", "num_block_repeats")
    vals = [list(getattr(cfg, k)) for k in lists]
    if len({len(v) for v in vals}) != 1:
        raise ModelSourceError(f"The config of {where} gives {', '.join(lists)} of different lengths.")
    out = []
    for c_in, c_out, stride, _, ratio, reps in zip(*vals):
        c_in, c_out = _round_filters(cfg, c_in), _round_filters(cfg, c_out)
        for j in range(math.ceil(cfg.depth_coefficient * reps)):
            s = stride if j == 0 else 1
            i = c_in if j == 0 else c_out
            out.append({"in": i, "out": c_out, "stride": s, "ratio": ratio,
                        "expanded": i * ratio, "se": max(1, int(i * cfg.squeeze_expansion_ratio)),
                        "residual": s == 1 and j > 0})  # apply_dropout = stride == 1 and not id_skip
    return out


def chain(src: WeightSource, *, factor: str, conv: str = "dc", freq=None):
    refuse_fft(conv, "EfficientNet")
    cfg = hf_config(src)
    eps = float(cfg.batch_norm_eps)
    act = activation(cfg.hidden_act, src.name)
    prefix = find_prefix(src, "encoder.blocks.0.depthwise_conv.depthwise_conv.weight", "EfficientNet")
    blocks = []
    for k, lay in enumerate(layout(cfg, src.name)):
        p = f"{prefix}encoder.blocks.{k}."
        ops = Ops(src, p.rstrip("."))
        e = lay["expanded"]
        if lay["ratio"] != 1:
            ops.conv(p + "expansion.expand_conv.weight", n_in=lay["in"], n_out=e)
            ops.bn(p + "expansion.expand_bn.", eps)
        ops.conv(p + "depthwise_conv.depthwise_conv.weight", groups=e, n_in=e, n_out=e)
        ops.bn(p + "depthwise_conv.depthwise_norm.", eps)
        s0 = ops.se(p + "squeeze_excite.reduce.", p + "squeeze_excite.expand.", act)
        ops.conv(p + "projection.project_conv.weight", n_in=e, n_out=lay["out"])
        ops.bn(p + "projection.project_bn.", eps)
        blocks.append(Block(f"blocks.{k}", p.rstrip("."), ops, "identity" if lay["residual"] else None,
                            {"stride": lay["stride"], "se_gate_mean": float(s0.mean())}))

    def reason(key):
        if "squeeze_excite" in key:
            return "squeeze-excitation weights: enter the factor only through the gate at zero input"
        if "embeddings" in key:
            return "stem: not an MBConv block"
        if "top_conv" in key:
            return "final 1x1 conv after the last block: not an MBConv block"
        return "classifier / head: not an MBConv block"

    return build_chain(src, blocks, factor=factor, dtype_key=blocks[0].branch.keys[0], skipped_reason=reason)


ADAPTER = Adapter(matches=config_matcher("efficientnet"), chain=chain, convolutional=True)

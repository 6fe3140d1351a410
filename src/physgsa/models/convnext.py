"""ConvNeXt and ConvNeXt V2 (transformers ``ConvNextModel`` / ``ConvNextV2Model`` and their task heads).

Layout from the config (``hidden_sizes``, ``depths``, ``num_stages``): stage ``s`` holds an
optional downsampling layer (LayerNorm, then a 2x2 stride-2 conv; present where the module
builds one: widths differ or stride 2, i.e. every stage but the first) and ``depths[s]``
residual blocks. Factors, in execution order (ours, docs/definitions.md):

- ``stages.{s}.downsample``: ``W_ds diag(g)``, the conv's zero-frequency channel matrix after the
  LayerNorm's affine scale ``g`` (its normalization is data-dependent and left out, as for
  GroupNorm in the UNet adapters). Not residual: the same in both modes (``plain``).
- ``blocks.{k}`` (``k`` counts blocks over all stages):
  ConvNeXt ``R = diag(gamma) W_2 W_1 diag(g) W_dw``, ConvNeXt V2
  ``R = W_2 diag(1 + w_grn) W_1 diag(g) W_dw``, full ``I + R``: the depthwise 7x7 ``W_dw``
  (diagonal at zero frequency; its groups are the block's ``col_groups``, one channel each),
  the LayerNorm's scale ``g``, the pointwise linears ``W_1`` (``4C x C``) and ``W_2``, GELU
  linearized as the identity, and ConvNeXt's layer scale ``gamma`` (``layer_scale_parameter``,
  present iff the config's ``layer_scale_init_value > 0``), read from the weights and applied:
  the block computes ``x + gamma * branch``.
- ConvNeXt V2's GRN, ``GRN(x) = x + w * (x * N(x)) + b`` with ``N(x) = G(x) / mean_c G(x)``
  and ``G(x)_c`` the spatial L2 norm of channel ``c``: ``N`` is scale-invariant and
  data-dependent (like a norm's normalization), and its channel mean is 1 (to ``1e-6``). The
  factor freezes ``N`` at that mean, ``diag(1 + w)``: exact where every channel has the same
  spatial energy (then ``N = 1``), and leaving out the derivative of ``N`` itself, as the
  static factors leave out every normalization's. The bias ``b`` drops out.

The stem (patch conv and its LayerNorm), the final LayerNorm and the classifier are skipped.
"""

from __future__ import annotations

from ._modern import Block, Ops, build_chain, find_prefix, hf_config, positive, refuse_fft
from .registry import Adapter, config_matcher
from .sources import ModelSourceError, WeightSource

__all__ = ["chain", "ADAPTER"]



def chain(src: WeightSource, *, factor: str, conv: str = "dc", freq=None):
    v2 = src.config.get("model_type") == "convnextv2"
    arch = "ConvNeXt V2" if v2 else "ConvNeXt"
    refuse_fft(conv, arch)
    cfg = hf_config(src)
    n_stages = positive(cfg, "num_stages", src.name)
    sizes, depths = list(cfg.hidden_sizes), list(cfg.depths)
    if len(sizes) < n_stages or len(depths) < n_stages:
        raise ModelSourceError(f"The config of {src.name} gives {n_stages} stages but hidden_sizes {sizes} and "
                               f"depths {depths}.")
    scale = (not v2) and float(cfg.layer_scale_init_value) > 0
    prefix = find_prefix(src, "encoder.stages.0.layers.0.dwconv.weight", arch)
    blocks, k, prev = [], 0, sizes[0]
    for s in range(n_stages):
        c = sizes[s]
        p = f"{prefix}encoder.stages.{s}."
        if prev != c or s > 0:  # ConvNextStage: in_channels != out_channels or stride > 1 (stride 2 for s > 0)
            ops = Ops(src, p + "downsampling_layer")
            ops.scale(ops.weight(p + "downsampling_layer.0.weight"), repr(p + "downsampling_layer.0.weight"))
            ops.conv(p + "downsampling_layer.1.weight", n_in=prev, n_out=c)
            blocks.append(Block(f"stages.{s}.downsample", p + "downsampling_layer", ops, None, {"stride": 2}))
        for j in range(depths[s]):
            q = f"{p}layers.{j}."
            ops = Ops(src, q.rstrip("."))
            ops.conv(q + "dwconv.weight", groups=c, n_in=c, n_out=c)
            ops.scale(ops.weight(q + "layernorm.weight"), repr(q + "layernorm.weight"))
            ops.conv(q + "pwconv1.weight", n_in=c)
            extra = {}
            if v2:
                w = ops.weight(q + "grn.weight").reshape(-1)
                ops.scale(1.0 + w, repr(q + "grn.weight"))
                extra["grn"] = "N frozen at its channel mean 1: diag(1 + weight)"
            ops.conv(q + "pwconv2.weight", n_out=c)
            if scale:
                key = q + "layer_scale_parameter"
                if not src.has(key):
                    raise ModelSourceError(f"{src.name} is missing {key!r}: its config sets layer_scale_init_value "
                                           f"= {cfg.layer_scale_init_value}, so every block scales its branch.")
                ops.scale(ops.weight(key), repr(key))
                extra["layer_scale"] = True
            blocks.append(Block(f"blocks.{k}", q.rstrip("."), ops, "identity", extra))
            k += 1
        prev = c

    def reason(key):
        if "embeddings" in key:
            return "stem (patch conv): not a residual block"
        return "classifier / head: not a residual block"

    return build_chain(src, blocks, factor=factor, dtype_key=f"{prefix}encoder.stages.0.layers.0.dwconv.weight",
                       skipped_reason=reason)


ADAPTER = Adapter(matches=config_matcher("convnext", "convnextv2"), chain=chain, convolutional=True)

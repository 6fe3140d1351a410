"""The generic walkers: models without an adapter.

Residual blocks from an execution (:func:`walk_blocks`; ``load_chain(module, sample=x)``)
-----------------------------------------------------------------------------------------
The model (a float64, eval-mode copy: the caller's module is never changed) is traced with
``torch.fx`` while it runs on the sample: every operation is recorded and also computed, so
Python control flow on shapes or values takes the branch the sample takes (transformers'
CNNs check their input's channels, pad by its size, ...). The graph must reproduce the
module's own output on the sample (and on Jacobian ``inputs``), or the walker refuses. In-place
operations are rewritten out of place where nothing reads the overwritten tensor afterwards,
and refused where something does. Everything below is read from that execution, never from
module names or weight shapes:

- A **residual block** is an addition of two tensors of the same shape that both depend on
  the input (``x + f(x)``, ``S(x) + f(x)``). Its input ``x`` is the addition's immediate
  dominator in the data-flow graph: the last tensor every path from the input to the addition
  runs through. The operand that is ``x`` itself, or else the one with fewer linear layers
  (on a tie, the second operand), is the shortcut; the other is the branch. Activations that
  follow the addition alone (ResNet's ReLU after the add) belong to the block. Blocks are
  ordered as they run and must form a sequence (each block's input at or after the previous
  block's output); nested or parallel residual paths are refused.
- Between two consecutive blocks, a stretch of layers with no residual (EfficientNet's stride-2
  or width-changing MBConv blocks) is one **plain** factor: the linear map from the previous
  block's output to the next block's input. Layers before the first block (the stem) and after
  the last (the head, the classifier) are not in the chain: they are listed as skipped.
- Factor names are the modules the factor's operations run in (the outermost modules all of
  whose operations belong to it, joined by ``+``), else ``residual.{k}`` / ``segment.{k}``.

Any sample input (:mod:`.samples`): a tensor of any rank (floats, or integer token ids), a tuple
of tensors (positional arguments) or a dict (keyword arguments), or a file (``.npy``, ``.npz``,
``.pt``). The first tensor is walked; the others are held at their values. Channels are axis 1
of a 4-D tensor (images), else the last axis (MLP and transformer blocks on ``(N, d)`` or
``(N, T, d)``): static factors read linear layers there (``W``, rows = outputs) and the
elementwise maps below; Jacobian factors average the JVP along ``e_c`` at every token over the
items and tokens. An addition inside a block of two paths that are not the block's input merges
parallel maps (mixture-of-experts): they stay in that block's factor, named in
``provenance.parallel``.

Static factors (``mode="static"``), channel-level, at zero frequency or on one Fourier mode:

- convolutions (dense, grouped, depthwise; any stride, padding, dilation) are their channel
  matrices (``_conv``: block-diagonal for grouped, diagonal for depthwise); BatchNorm (eval) is
  ``diag(gamma / sqrt(running_var + eps))`` with the module's own ``eps``; average pooling is
  its per-channel gain; zero padding (``F.pad``, ``ZeroPad2d``: TF-style "same" padding) is
  the identity on the channels and, on a Fourier mode, adds its offset to the padding of the
  conv that reads it; constant scales (layer scale, ``x * 0.5``) are diagonal; additive terms
  that do not depend on the block's input (biases, BatchNorm shifts) drop out;
- ReLU-family activations (ReLU, ReLU6, LeakyReLU, PReLU, ELU, CELU, SiLU/Swish, GELU,
  Hardswish, Mish, Softplus) are linearized as **all-active**: slope 1, the identity. Dropout and
  Identity are the identity (eval);
- a **gate** is a product ``h * g`` where ``g`` is computed from the block's own activations
  through a spatial reduction (a global mean or max pool): squeeze-excitation
  ``g = sigmoid(W_2 act(W_1 mean(h)))`` and its variants. Its static factor (ours) is the gate
  **frozen at the sample**: ``diag(g(sample))``, the per-channel scale the gate applies to the
  sample. A factor is the mean over the sample's items of the factor with each item's own gate
  values. The gate's own layers enter only through these values and are listed as skipped.
  Why frozen: static mode replaces each nonlinearity by a fixed linear map at an operating
  point (ReLU: all-active). A sigmoid gate has no data-free operating point that keeps what it
  does (all-open, ``g = 1``, would drop the channel weighting the gate learned), and its
  derivative needs every activation of the block, which is Jacobian mode. Frozen, it is exactly
  the block's linear map with the gate's input path held fixed; on a torus with activations
  all-active it is the exact JVP of the block on every Fourier mode that is not zero frequency
  on the gate's grid (a spatial mean does not see such a mode); at zero frequency the true
  Jacobian adds the gate's derivative term, which Jacobian mode includes. Static factors of a
  model with gates therefore depend on the sample (recorded in the provenance: ``gates``).
- Anything else on a factor's path (a sigmoid or tanh outside a gate, max pooling, channel
  concatenation or reshuffling, normalizations other than BatchNorm, products of two
  activations) is refused with the operation and module named.

Residual block factors: ``full`` = ``S + R`` (``S = I`` or the projection path), ``branch`` =
``R``, the product of the linear maps along the branch. Plain factors are their linear map in
both (``provenance.kind = "plain"``). ``conv="fft"``: each factor on the Fourier mode
``(u, v)`` of the ``n x n`` torus at the input of the chain's first factor, followed through the
strides (``_conv.FourierMode``), in real form. A factor whose input is read by a grouped
convolution (through per-channel maps only) carries its input groups as ``col_groups``
(``units="groups"``).

Jacobian factors (``mode="jacobian"``): each factor's map (the block with its shortcut and its
trailing activations for ``full``; the branch operand for ``branch``; a plain factor's stretch)
is run from the traced graph on the factor's input at the sample (or at ``inputs``), and
reduced by :func:`physgsa.models.jacobian.channel_jacobian`: column ``c`` is the spatial mean
of the JVP along ``e_c`` times ones, averaged over the items. Activations and gates are
differentiated exactly.

Layers in execution order (:func:`walk_chain`; no sample, transformers models built from a
config)
-----------------------------------------------------------------------------------------------
A forward pass with a hook on every leaf module records the Linear, Conv1D (transformers) and
Conv1d/Conv2d layers in the order they run; each becomes a plain factor (its weight, rows =
outputs; a conv kernel as its zero-frequency channel matrix, block-diagonal for a grouped conv,
with ``col_groups``), named by its module path. Adjacent layers whose sizes meet are interfaces;
the others are breaks, reported. Every other module with weights and every layer the pass never
ran is listed as skipped, with the reason. The sample input is the caller's, or a transformers
model's own ``dummy_inputs``; it only fixes the execution order, never a factor's values.

``build="file.py:function"`` (:func:`build_module`) imports the named file and calls the
function to make the module: **it runs that file's code**, as importing it would (checkpoints
never run code; a build file always does). Silent skips are bugs.

The parts, one job each: :mod:`.options` (parameters, messages, the seeded sample),
:mod:`.build` (``build=``), :mod:`.trace` (torch.fx tracing on the sample), :mod:`.graph` (the
traced graph and its data-flow facts), :mod:`.blocks` (block finding), :mod:`.conv` (conv
parameters, strides, input groups), :mod:`.batchnorm` (BatchNorm folding), :mod:`.static` (static
factors), :mod:`.differentiate` (Jacobian factors), :mod:`.walk` (the residual-block walker) and
:mod:`.layers` (layers in execution order).
"""

from __future__ import annotations

from .build import build_module
from .graph import ACTIVATIONS
from .layers import walk_chain
from .options import check_build, check_sample_shape, layout_help, seeded_sample, source_name, without_layout
from .samples import read_sample, sample_inputs
from .walk import walk_blocks, walk_source

__all__ = [
    "ACTIVATIONS",
    "build_module",
    "check_build",
    "check_sample_shape",
    "layout_help",
    "read_sample",
    "sample_inputs",
    "seeded_sample",
    "source_name",
    "walk_blocks",
    "walk_chain",
    "walk_source",
    "without_layout",
]

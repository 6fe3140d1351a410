"""Every weight matrix of a model as stored, for ``physgsa spectra`` (the fast pass).

Each 2-D weight is analysed as it is (rows = outputs): Linear layers, embeddings however
large, and GPT-2's Conv1D weights transposed to rows = outputs with the fused QKV split into
Q, K and V; each 4-D conv kernel as its zero-frequency channel matrix. Nothing is skipped
silently: every other tensor (biases, normalization vectors, integer buffers, other ranks) is
listed with the reason.
"""

from __future__ import annotations

from ..survey import excluded
from ._conv import conv_dc
from .sources import WeightSource

__all__ = ["raw_matrices"]

_GPT2_CONV1D = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")


def _width(src: WeightSource) -> int | None:
    for key in ("n_embd", "hidden_size"):
        if isinstance(src.config.get(key), int):
            return src.config[key]
    return None


def raw_matrices(src: WeightSource, arch: str, *, exclude: tuple[str, ...] = ()):
    """Yield ``(name, matrix, key, note)`` for every analysable weight; return the skipped list.

    Used as ``skipped = yield from raw_matrices(...)``; the matrices are produced one at a time,
    so the caller decomposes and releases each before the next is read. A tensor whose key
    matches an ``exclude`` glob pattern is listed as skipped and never read.
    """
    skipped = []
    d = _width(src)
    for key in src.keys():
        pat = excluded(key, key, exclude)
        if pat is not None:
            skipped.append({"module": key, "reason": f"excluded by the pattern {pat!r}"})
            continue
        shape = src.shape(key)
        code = src.dtype(key).upper()
        if code.startswith(("I", "U", "BOOL")):  # I64, U8, BOOL (safetensors); int64, uint8, bool (torch)
            skipped.append({"module": key, "reason": f"integer tensor ({src.dtype(key)}): a buffer, not a weight"})
            continue
        if len(shape) < 2:
            skipped.append({"module": key, "reason": f"{len(shape)}-D tensor (bias or normalization vector)"})
            continue
        if len(shape) not in (2, 4):
            skipped.append({"module": key, "reason": f"{len(shape)}-D tensor: neither a matrix nor a conv kernel"})
            continue
        if min(shape[:2]) == 0:
            skipped.append({"module": key, "reason": f"empty tensor {shape}"})
            continue
        w = src.get(key)
        if len(shape) == 4:
            yield key, conv_dc(w), key, f"conv kernel {shape[2]}x{shape[3]} as its zero-frequency channel matrix"
            continue
        if arch == "gpt2" and key.endswith(_GPT2_CONV1D):
            w = w.T
            if key.endswith(".c_attn.weight") and d is not None and w.shape[0] == 3 * d:
                for i, part in enumerate("QKV"):
                    yield f"{key}:{part}", w[i * d:(i + 1) * d], key, f"fused QKV split: {part} (Conv1D, transposed)"
                continue
            yield key, w, key, "Conv1D weight, transposed to rows = outputs"
            continue
        yield key, w, key, ""
    return skipped

"""Every weight of a model as stored, for ``physgsa spectra`` (the fast pass).

Each tensor is read by its shape; nothing is skipped silently.

- A 2-D weight is a matrix as it is (rows = outputs): Linear layers, embeddings however large.
  GPT-2's Conv1D weights are transposed to rows = outputs, and the fused ``c_attn`` is analysed
  whole and also split into Q, K and V (config ``n_embd``).
- A 4-D conv kernel ``(out, in / groups, kh, kw)`` becomes physgsa's channel operator at zero
  frequency: ``sum_{h,w} W[:, :, h, w]`` for a dense conv, the block-diagonal matrix of the
  groups' sums for a grouped one (diagonal for a depthwise conv). ``groups`` is read from the
  module when an ``nn.Module`` is given. From a file it cannot be known in general: a kernel
  ``(C, 1, kh, kw)`` with ``C > 1`` is taken as depthwise (``groups = C``, operator ``C x C``
  diagonal) and every other kernel as dense (``groups = 1``); the row's ``note`` says so. A
  dense conv with one input channel, such as a grayscale stem ``Conv2d(1, C, k)``, has the same
  shape as a depthwise one: pass the module to have it read as dense.
- 0-D and 1-D tensors (biases, normalization vectors, counters), integer buffers, 3-D and 5-D+
  tensors and empty tensors are listed as skipped with the reason.

Beside each row's own matrix, each item carries how WeightWatcher 0.7.7's ``analyze()`` sees
the same weight (:class:`physgsa.core.powerlaw.WWLayer`): one matrix for a 2-D weight, the pooled
``kh * kw`` slices times ``sqrt(1/2)`` for a conv kernel, and whether its defaults keep the
layer. With an ``nn.Module`` the layer types are WeightWatcher's own (the class-name test of
``PyTorchLayer.layer_type``, weightwatcher.py:295-317: Linear, Conv1d/Conv1D, Conv2d and
Embedding are analysed; norms and everything else are not). Without one, WeightWatcher's
state-dict rule is used (``PyStateDictLayer``, weightwatcher.py:419-489): keys ending in
``.weight`` whose tensor is 2-D (dense) or 4-D (conv2d) with at least 2 rows. Then its size
filters apply (:func:`physgsa.core.powerlaw.ww_filter`).
"""

from __future__ import annotations

import fnmatch
import zipfile
from typing import NamedTuple

import numpy as np

from ..core import powerlaw
from ..core.validation import ChainFileError
from ._conv import conv_dc, grouped_channel_matrix
from .files import check_archive, check_npy_members, not_an_archive
from .sources import WeightSource

__all__ = ["raw_matrices", "Item", "module_layers", "NpzSource", "excluded"]

_GPT2_CONV1D = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")
_WW_ANALYSED = ("dense", "conv1d", "conv2d", "embedding")


class Item(NamedTuple):
    """One row of ``physgsa spectra``: its name, its matrix (Part I), its tensor key, a note,
    which matrix the Part I columns are on, and how WeightWatcher sees the weight.
    """

    name: str
    matrix: np.ndarray
    key: str
    note: str
    operator: str = "W"
    ww: powerlaw.WWLayer | None = None


def excluded(key: str, name: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern that matches the tensor ``key`` or the matrix ``name``, or None."""
    for pat in patterns:
        if fnmatch.fnmatchcase(key, pat) or fnmatch.fnmatchcase(name, pat):
            return pat
    return None


def _dtype_name(code: str) -> str:
    """One spelling for every reader: safetensors' ``I64`` and torch's ``int64`` are both ``int64``."""
    code = code.upper()
    short = {"I": "int", "U": "uint"}
    if code[:1] in short and code[1:].isdigit():
        return f"{short[code[0]]}{code[1:]}"
    return code.lower()


def _width(src: WeightSource) -> int | None:
    for key in ("n_embd", "hidden_size"):
        if isinstance(src.config.get(key), int):
            return src.config[key]
    return None


def ww_module_type(module) -> str | None:
    """WeightWatcher's layer type of a torch module (``PyTorchLayer.layer_type``, weightwatcher.py:295-317)."""
    import torch  # start-up: loaded only when needed, never at `physgsa --help`

    typestr = str(type(module)).lower()
    if isinstance(module, torch.nn.Linear) or "linear" in typestr:
        return "dense"
    if isinstance(module, torch.nn.Conv1d) or "conv1d" in typestr:
        return "conv1d"
    if isinstance(module, torch.nn.Conv2d) or "conv2d" in typestr:
        return "conv2d"
    if isinstance(module, torch.nn.Embedding) or "embedding" in typestr:
        return "embedding"
    if "norm" in typestr:
        return "norm"
    return None


def module_layers(module) -> dict:
    """``{state-dict key of a module's weight: (WeightWatcher layer type, class name, groups)}``.

    Walks ``named_modules()`` as WeightWatcher does; a module without a ``weight`` attribute is
    not a layer. ``groups`` is the module's ``groups`` (1 when it has none).
    """
    out = {}
    for name, mod in module.named_modules():
        if not hasattr(mod, "weight") or mod.weight is None:
            continue
        key = f"{name}.weight" if name else "weight"
        groups = getattr(mod, "groups", 1)
        out[key] = (ww_module_type(mod), type(mod).__name__, int(groups) if isinstance(groups, int) else 1)
    return out


def _ww_kept(key: str, shape: tuple, modules: dict | None) -> str:
    """Why WeightWatcher's layer iterator does not take this weight at all (before its size filters), or ``""``."""
    if modules is not None:
        info = modules.get(key)
        if info is None:
            return "WeightWatcher skips it: not the weight of a module (only module.weight is read)"
        kind, cls, _ = info
        if kind not in _WW_ANALYSED:
            return f"WeightWatcher skips it: a {cls} module (layer type {kind or 'unknown'})"
        return ""
    if not key.endswith(".weight"):
        return "WeightWatcher's state-dict reader takes only keys ending in '.weight'"
    if shape[0] < 2:
        return "WeightWatcher's state-dict reader skips a weight with fewer than 2 rows (layer type unknown)"
    return ""


def _conv_item(key: str, w: np.ndarray, groups: int | None, kept: str):
    """The conv kernel's row: its channel operator and how WeightWatcher sees it."""
    out, per, kh, kw = w.shape
    note = ""
    if groups is None:  # from a file: the shape decides
        if per == 1 and out > 1:
            groups = out
            note = (f"assumed depthwise (groups = {out}) from the shape ({out}, 1, {kh}, {kw}); a dense conv "
                    "with one input channel has the same shape (pass the nn.Module to know)")
        else:
            groups = 1
            note = "assumed dense (groups = 1): the weights alone do not record groups (pass the nn.Module to know)"
    dc = conv_dc(w)
    if groups == 1:
        mat = dc
        op = f"sum_hw W[:, :, h, w] ({kh}x{kw} kernel at zero frequency)"
    else:
        mat = grouped_channel_matrix(dc, groups)[0]
        kind = "diagonal" if per == 1 and groups == out else f"block-diagonal, {groups} groups"
        op = f"sum_hw W[:, :, h, w] per group, {kind} ({kh}x{kw} kernel at zero frequency)"
    ww = powerlaw.conv2d_layer(w, kept=kept, same_as_row=(groups == 1))
    return mat, op, note, ww


class _Reader:
    """Reads each weight as float64 into one buffer that is reused from weight to weight.

    A fresh float64 array per weight costs its page faults (the kernel zeroes every new page):
    on GPT-2 small that was 1.1 s of reading against 0.2 s into memory already in use. The
    values are those of :meth:`WeightSource.get` (the same exact widening); a source that
    reads in its own way (overrides ``get``) is read through it.
    """

    def __init__(self, src: WeightSource):
        self.src = src
        self.own = type(src).get is WeightSource.get
        self._buf = None

    def get(self, key: str) -> np.ndarray:
        if not self.own:
            return self.src.get(key)
        self.src.check(key)
        raw = np.asarray(self.src._read(key))
        if raw.dtype.kind not in "fiu" or raw.size == 0:
            return self.src.get(key)  # its own error for a non-real dtype; nothing to reuse for an empty one
        if not (raw.flags.c_contiguous or raw.flags.f_contiguous):
            return self.src.get(key)
        if self._buf is None or self._buf.size < raw.size:
            self._buf = None  # the smaller buffer goes before the larger one is made
            self._buf = np.empty(raw.size, dtype=np.float64)
        flat = self._buf[:raw.size]
        # The memory order of get()'s astype (a Fortran-ordered array stays so), so that every
        # product over it runs as before.
        out = flat.reshape(raw.shape) if raw.flags.c_contiguous else flat.reshape(raw.shape[::-1]).T
        np.copyto(out, raw, casting="unsafe")  # the same conversion as get()'s astype(float64)
        return out


def raw_matrices(src: WeightSource, arch: str, *, exclude: tuple[str, ...] = (), modules: dict | None = None,
                 reuse: bool = False):
    """Yield an :class:`Item` for every analysable weight; return the skipped list.

    Used as ``skipped = yield from raw_matrices(...)``; the matrices are produced one at a time,
    so the caller decomposes and releases each before the next is read. A tensor whose key
    matches an ``exclude`` glob pattern is listed as skipped and never read. ``modules`` (from
    :func:`module_layers`) gives the conv groups and WeightWatcher's layer types of a live module.
    With ``reuse``, every weight is read into the same buffer: an item's matrix is then valid
    only until the next item is asked for (the caller must not keep it).
    """
    skipped = []
    d = _width(src)
    read = _Reader(src).get if reuse else src.get
    for key in src.keys():
        pat = excluded(key, key, exclude)
        if pat is not None:
            skipped.append({"module": key, "reason": f"excluded by the pattern {pat!r}"})
            continue
        shape = tuple(src.shape(key))
        code = src.dtype(key).upper()
        if code.startswith(("I", "U", "BOOL")):  # I64, U8, BOOL (safetensors); int64, uint8, bool (torch, numpy)
            skipped.append({"module": key, "reason": f"integer tensor ({_dtype_name(code)}, shape {list(shape)}): "
                                                     "a buffer or counter, not a weight"})
            continue
        if len(shape) == 0:
            skipped.append({"module": key, "reason": "0-D tensor (a scalar): no matrix"})
            continue
        if len(shape) == 1:
            skipped.append({"module": key, "reason": f"1-D tensor of {shape[0]} (bias or normalization vector): "
                                                     "no matrix"})
            continue
        if len(shape) not in (2, 4):
            skipped.append({"module": key, "reason": f"{len(shape)}-D tensor {list(shape)}: neither a matrix "
                                                     "nor a conv kernel"})
            continue
        if 0 in shape:
            skipped.append({"module": key, "reason": f"empty tensor {list(shape)}"})
            continue
        kept = _ww_kept(key, shape, modules)
        w = read(key)
        if len(shape) == 4:
            groups = modules[key][2] if modules is not None and key in modules else None
            mat, op, note, ww = _conv_item(key, w, groups, kept)
            yield Item(key, mat, key, note, op, ww)
            continue
        if arch == "gpt2" and key.endswith(_GPT2_CONV1D):
            wt = w.T  # Conv1D stores (in, out); WeightWatcher analyses it as stored (same eigenvalues)
            ww = powerlaw.dense_layer(shape, "W as stored (in x out)", kept=kept)
            if key.endswith(".c_attn.weight") and d is not None and wt.shape[0] == 3 * d:
                yield Item(key, wt, key, "fused QKV (Conv1D, transposed); its Q, K and V parts follow", "W^T", ww)
                for i, part in enumerate("QKV"):
                    sub = wt[i * d:(i + 1) * d]
                    pww = powerlaw.dense_layer(sub.shape, f"W^T[{part}] (not a WeightWatcher layer)",
                                               kept=f"WeightWatcher analyses the fused {key}, not its {part} part")
                    yield Item(f"{key}:{part}", sub, key, f"fused QKV split: {part} (Conv1D, transposed)",
                               f"W^T rows {i * d}:{(i + 1) * d} ({part})", pww)
                continue
            yield Item(key, wt, key, "Conv1D weight, transposed to rows = outputs", "W^T", ww)
            continue
        yield Item(key, w, key, "", "W", powerlaw.dense_layer(shape, "W", kept=kept))
    return skipped


class NpzSource(WeightSource):
    """An ``.npz`` archive of named arrays, read one array at a time (never unpickled)."""

    def __init__(self, path, name: str):
        super().__init__(name, None)
        why = not_an_archive(path)
        if why is not None:  # numpy would take it for a pickle and advise allow_pickle
            raise ChainFileError(f"Tensor file '{path}' is not an .npz archive: {why}. An .npz is a zip of .npy "
                                 "arrays, as numpy.savez writes.")
        check_archive(path, f"Tensor file '{path}'", error=ChainFileError)
        try:
            self._npz = np.load(path, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, NotImplementedError,
                RuntimeError) as exc:
            raise ChainFileError(f"'{path}' is not a readable .npz archive ({type(exc).__name__}: {exc}).") from None
        if not hasattr(self._npz, "files"):
            raise ChainFileError(f"'{path}' holds a single array, not an .npz archive of named arrays.")
        self._path = path
        self._meta = {}

    def keys(self):
        return list(self._npz.files)

    def _header(self, key):
        if key not in self._meta:
            try:
                with self._npz.zip.open(key + ".npy") as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
            except Exception as exc:  # noqa: BLE001 - any damage to a member means the same thing
                raise ChainFileError(f"Array {key!r} in '{self._path}' is unreadable ({type(exc).__name__}).") from None
            self._meta[key] = (tuple(int(x) for x in shape), np.dtype(dtype))
        return self._meta[key]

    def shape(self, key):
        return self._header(key)[0]

    def dtype(self, key):
        return str(self._header(key)[1])

    def _read(self, key):
        try:
            return self._npz[key]
        except ValueError as exc:
            why = check_npy_members(self._path)  # a header that declares other bytes than it holds
            raise ChainFileError(
                f"Tensor file '{self._path}' is corrupted: {why}. Save it again with numpy.savez." if why else
                f"Array {key!r} in '{self._path}' cannot be read without unpickling ({exc}).") from None

"""The walker's sample input: a tensor of any rank (floats or integer token ids), a tuple of tensors
(positional arguments) or a dict (keyword arguments), given in Python or read from a file
(``--sample FILE.npy|.npz|.pt``).

The first tensor (a tuple's first, a dict's first key) is the input whose path the walker follows;
the others (attention masks, conditioning) are held at their values.
"""

from __future__ import annotations

import keyword
import math
import re
from pathlib import Path

import numpy as np

from ...core.resources import check_memory, default_limit
from ...core.validation import InvalidParameterError
from ..sources import import_torch
from .options import flag

_ARR = re.compile(r"^arr_(\d+)$")


class Inputs:
    """A sample as the module is called with it: ``tensors`` in order, and their keyword names (or None)."""

    def __init__(self, tensors: list, keys: list[str] | None = None):
        self.tensors, self.keys = list(tensors), keys

    @property
    def first(self):
        return self.tensors[0]

    def call(self, model, tensors=None):
        ts = [t.clone() for t in (self.tensors if tensors is None else tensors)]
        return model(**dict(zip(self.keys, ts))) if self.keys is not None else model(*ts)

    def with_first(self, x) -> Inputs:
        return Inputs([x, *self.tensors[1:]], self.keys)

    def shape_note(self) -> str:
        shapes = ", ".join(f"{k + '=' if self.keys else ''}{tuple(t.shape)}" for k, t in
                           zip(self.keys or [""] * len(self.tensors), self.tensors))
        return f"of shape {shapes}" if len(self.tensors) == 1 else f"of shapes ({shapes})"


def check_sample(sample, caller: str = "python", where: str | None = None) -> Inputs:
    """A sample as :class:`Inputs` (float tensors in float64, integer ones kept), or one clear refusal."""
    torch = import_torch()
    where = where or ("--sample" if caller == "cli" else "The 'sample' parameter of load_chain")

    def bad(why):
        return InvalidParameterError(f"{where} {why}")

    if isinstance(sample, dict):
        if not sample:
            raise bad("is an empty dict; give the module's inputs by their argument names.")
        if not all(isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k) for k in sample):
            raise bad(f"must be a dict whose keys are the names of the module's arguments; got keys "
                      f"{list(sample)[:4]!r}.")
        keys, items = list(sample), list(sample.values())
    elif isinstance(sample, (tuple, list)):
        if not sample:
            raise bad("is an empty tuple; give at least one tensor.")
        keys, items = None, list(sample)
    else:
        keys, items = None, [sample]
    tensors = []
    for k, t in enumerate(items):
        name = f" ({keys[k]!r})" if keys else f" (item {k})" if len(items) > 1 else ""
        if isinstance(t, np.ndarray):
            if t.dtype.kind not in "fiub":
                raise bad(f"holds a {t.dtype} array{name}; give float or integer arrays.")
            t = torch.from_numpy(np.array(t, order="C"))  # keeps a 0-D array 0-D
        if not isinstance(t, torch.Tensor):
            raise bad(f"must be a tensor, a tuple of tensors (positional arguments) or a dict of tensors (keyword "
                      f"arguments); got a {type(t).__name__}{name}.")
        if t.is_complex():
            raise bad(f"holds a complex tensor{name}; give float or integer tensors.")
        if t.ndim == 0 and k == 0:
            raise bad("is a 0-D tensor; the walked input needs a channel axis (e.g. (N, d), (N, T) token ids or "
                      "(N, C, H, W) images).")
        if t.is_floating_point():
            if not bool(torch.isfinite(t).all()):
                raise bad(f"has NaN or Inf entries{name}.")
            t = t.detach().to(torch.float64)
        tensors.append(t.detach().clone())
    if tensors[0].dtype == torch.bool:
        raise bad("starts with a boolean tensor; the walked input (the first) must hold floats or token ids.")
    return Inputs(tensors, keys)


def read_sample(path, caller: str = "python"):
    """Read a sample file: ``.npy`` (one array), ``.npz`` (keyword arguments by name, or positional
    when named ``arr_0``, ``arr_1``, ...), ``.pt`` (``torch.load(weights_only=True)`` of a tensor, a
    tuple/list or a dict of tensors). Never runs code. One :class:`InvalidParameterError` line
    naming the file and the flag (``--sample``) or argument (``sample=``) otherwise.
    """
    from ..files import _ZIP_ERRORS, check_archive, not_an_archive

    torch = None  # loaded only for a .pt: a bad file is refused in a fraction of torch's start-up
    path = Path(path)
    where = f"{flag('sample', caller)} {path}" if caller == "cli" else f"sample={str(path)!r}"

    def bad(why):
        return InvalidParameterError(f"{where}: {why}")

    if not path.exists():
        raise bad(f"the sample file '{path}' does not exist.")
    if not path.is_file():
        raise bad(f"'{path}' is not a file.")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".pt"):
        raise bad(f"'{path}' is not a sample file; give an .npy (one array), an .npz (its arrays as keyword "
                  "arguments by name, or positional as arr_0, arr_1, ...) or a .pt (a tensor, tuple or dict).")
    try:
        if suffix == ".npy":
            mapped = np.load(path, allow_pickle=False, mmap_mode="r")  # the header only: nothing allocated
            check_memory(int(mapped.dtype.itemsize) * math.prod(mapped.shape), default_limit(), where)
            return np.array(mapped)
        if suffix == ".npz":
            why = not_an_archive(path)
            if why is not None:
                raise bad(f"not a readable .npz archive: {why}.")
            check_archive(path, where, error=InvalidParameterError)
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            if not arrays:
                raise bad("the .npz holds no arrays.")
            idx = [_ARR.match(k) for k in arrays]
            if all(idx) and sorted(int(m.group(1)) for m in idx if m) == list(range(len(arrays))):
                return tuple(arrays[f"arr_{i}"] for i in range(len(arrays)))
            return arrays
        if not_an_archive(path) is None:
            check_archive(path, where, error=InvalidParameterError)
        torch = import_torch()
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except InvalidParameterError:
        raise
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, RuntimeError, *_ZIP_ERRORS) as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise bad(f"cannot be read as a {suffix} sample ({type(exc).__name__}: {first}).") from None
    except Exception as exc:  # noqa: BLE001 - torch's unpickler refuses in its own ways
        if type(exc).__name__ != "UnpicklingError":
            raise
        raise bad("the .pt holds more than tensors (torch.load with weights_only=True refuses it).") from None
    if isinstance(obj, torch.Tensor) or (isinstance(obj, (tuple, list)) and obj) or (isinstance(obj, dict) and obj):
        return tuple(obj) if isinstance(obj, list) else obj
    raise bad(f"the .pt holds a Python {type(obj).__name__}; give a tensor, a tuple or a dict of tensors.")


def sample_inputs(sample, caller: str = "python") -> Inputs:
    """``sample=`` as given (a tensor, tuple, dict, or a path to a sample file), checked."""
    if isinstance(sample, (str, Path)):
        where = f"--sample {sample}" if caller == "cli" else f"sample={str(sample)!r}"
        return check_sample(read_sample(sample, caller), caller, where=where)
    return check_sample(sample, caller)

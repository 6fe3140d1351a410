"""The walker's parameters and messages: ``build=``, ``sample_shape=``, the layout help, the seeded sample."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from ...core.resources import check_memory, default_limit
from ...core.validation import InvalidParameterError, command_line, on_command_line, spell
from ..registry import BUNDLED_MODELS
from ..sources import WeightSource, import_torch


def flag(name: str, caller: str) -> str:
    """How a parameter is spelled for the caller: ``sample_shape=`` in Python, ``--sample-shape`` on the CLI
    (:func:`physgsa.core.validation.spell`; ``caller="cli"`` names flags outside the command line too).
    """
    if caller == "cli" and not on_command_line():
        with command_line():
            return spell(name)
    return spell(name)


def layout_help(name: str, interface: str | None = None) -> str:
    """The one-line error for weights whose layout physgsa cannot tell (no config, no adapter, no sample).

    ``interface`` is ``"python"`` (the arguments of ``load_chain`` / ``chain_from``) or ``"cli"``
    (the flags of ``physgsa certify``).
    """
    if interface is None:
        interface = "cli" if on_command_line() else "python"
    if interface not in ("python", "cli"):
        raise InvalidParameterError(f"The 'interface' parameter of layout_help must be one of {{'python', 'cli'}}. "
                                    f"Got {interface!r} instead.")
    head = (f"{name}: physgsa cannot tell this model's layout: it holds weights but no config.json, and no adapter "
            "recognizes its weight names. Give the layout one of these ways: put the model's config.json beside the "
            "weights (for an architecture `physgsa models` lists); ")
    if interface == "cli":
        return head + ("or rerun with --build FILE.py:FUNC --sample-shape 1,C,H,W, where FUNC() returns the "
                       "nn.Module (--build runs FILE's code), the weights are loaded into it, and the generic walker "
                       "finds its residual blocks by running it on a seeded random input of that shape; or export "
                       "the factor matrices to an .npz chain and certify that.")
    return head + ("or pass the nn.Module itself with sample= (an input batch, e.g. torch.randn(1, 3, 224, 224)), and "
                   "the generic walker finds its residual blocks by running it; or pass build='file.py:function' "
                   "(the function returns the nn.Module; this runs the file's code) with sample_shape=(1, C, H, W), "
                   "and the weights are loaded into it; or export the factor matrices to an .npz chain.")


def source_name(source) -> str:
    """A source's name for messages."""
    return source.name if isinstance(source, WeightSource) else str(source)


def without_layout(source) -> bool:
    """Weights with nothing that tells their layout: a state dict, or a file or folder without config.json."""
    if isinstance(source, WeightSource):
        return not source.config
    text = str(source)
    if text in BUNDLED_MODELS:
        return False
    path = Path(text)
    if not path.exists():
        return False  # a hub id: resolve_source says what is missing
    folder = path.parent if path.is_file() else path
    return not (folder / "config.json").is_file()


# ----- parameters -------------------------------------------------------------------------------

BUILD_RE = re.compile(r"^(?P<target>.+):(?P<func>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_build(value, where: str = "The 'build' parameter of load_chain"):
    """``'path/to/file.py:function'`` or ``'package.module:function'``, checked (not imported)."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidParameterError(f"{where} must be 'FILE.py:FUNCTION' or 'package.module:FUNCTION'. "
                                    f"Got {type(value).__name__} instead.")
    text = str(value)
    m = BUILD_RE.match(text)
    if not m:
        raise InvalidParameterError(f"{where} must be 'FILE.py:FUNCTION' or 'package.module:FUNCTION' (a function "
                                    f"that takes no arguments and returns the nn.Module). Got {text!r} instead.")
    target = m.group("target")
    if not (target.endswith(".py") or "/" in target or os.sep in target or _MODULE_RE.match(target)):
        raise InvalidParameterError(f"{where}: {target!r} is neither a .py file nor a dotted module name. "
                                    f"Got {text!r}.")
    return text


def check_sample_shape(value, where: str = "The 'sample_shape' parameter of load_chain"):
    """``(N, ...)``: one or more positive integers (a tuple, or a string ``"1,3,32,32"``): images
    ``(N, C, H, W)``, vectors ``(N, d)``, sequences ``(N, T, d)``, ...
    """
    raw = value
    if isinstance(value, str):
        try:
            value = tuple(int(v) for v in value.replace("x", ",").split(","))
        except ValueError:
            value = None
    try:
        ok = value is not None and 1 <= len(value) <= 8 and all(
            not isinstance(v, bool) and int(v) == v and int(v) >= 1 for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(f"{where} must be positive integers N, ... (the batch's shape: e.g. 1,3,32,32 "
                                    f"for images, 4,16 for vectors). Got {raw!r} instead.")
    return tuple(int(v) for v in value)


def check_freq(freq) -> tuple[int, int, int]:
    """``freq = (u, v, n)``: three integers with ``n >= 1`` (the Fourier mode of ``--conv fft``)."""
    if len(freq) != 3 or any(float(x) != int(x) for x in freq) or int(freq[2]) < 1:
        where = spell("freq") if on_command_line() else "The 'freq' parameter of load_chain"
        raise InvalidParameterError(f"{where} must be three integers u, v, n with n >= 1; got {freq!r}.")
    u, v, n = (int(x) for x in freq)
    return u, v, n


def seeded_sample(shape, seed: int):
    """A float64 standard normal batch of ``shape`` from ``torch.Generator().manual_seed(seed)``."""
    torch = import_torch()
    check_memory(8 * math.prod(shape), default_limit(), f"A sample of shape {tuple(shape)}")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(*shape, generator=g, dtype=torch.float64)

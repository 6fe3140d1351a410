"""``build="FILE.py:FUNC"`` (``--build``): make the nn.Module by running the user's code, load weights into it.

This runs the named file's code (importing it, then calling the function), exactly as ``python FILE.py``
would; checkpoints never run code, a build file always does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from ..resolve import resolve_source
from ..sources import ModelSourceError, TensorDictSource, import_torch
from .options import BUILD_RE, check_build, flag


def build_module(spec: str, *, caller: str = "python", weights=None):
    """Import ``FILE.py`` or ``package.module`` and return ``FUNCTION()`` (an nn.Module).

    This runs the named file's code (importing it, then calling the function), exactly as
    ``python FILE.py`` would run its top level. Only use it on code you trust. With ``weights``
    (a checkpoint path, a hub id in the local cache, or a state dict), they are loaded into the
    module (every key must match, shapes too; checkpoints are read as everywhere in physgsa,
    never running code). Every failure is one :class:`ModelSourceError` line naming the file
    and the function.
    """
    torch = import_torch()
    where = f"{flag('build', caller)}{spec}" if caller == "cli" else f"build={spec!r}"
    text = check_build(spec, "--build" if caller == "cli" else "The 'build' parameter of load_chain")
    m = BUILD_RE.match(text)
    target, func = m.group("target"), m.group("func")
    path = Path(target)
    as_file = target.endswith(".py") or "/" in target or os.sep in target
    added = None
    try:
        if as_file:
            if not path.is_file():
                raise ModelSourceError(f"{where}: the file '{path}' does not exist.")
            name = f"physgsa_build_{abs(hash(str(path.resolve()))):x}"
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ModelSourceError(f"{where}: '{path}' cannot be imported as Python.")
            module = importlib.util.module_from_spec(loader_spec)
            folder = str(path.resolve().parent)
            if folder not in sys.path:  # its sibling modules import as when run as a script
                sys.path.insert(0, folder)
                added = folder
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        obj = module
        for part in func.split("."):
            if not hasattr(obj, part):
                raise ModelSourceError(f"{where}: {target} defines no {func!r}.")
            obj = getattr(obj, part)
        if not callable(obj):
            raise ModelSourceError(f"{where}: {target}:{func} is a {type(obj).__name__}, not a function.")
        model = obj()
    except ModelSourceError:
        raise
    except BaseException as exc:  # the user's code can fail in any way; SystemExit too
        if isinstance(exc, KeyboardInterrupt):
            raise
        first = (str(exc).splitlines() or [""])[0][:300]
        raise ModelSourceError(f"{where}: running {target}:{func} raised {type(exc).__name__}: {first}") from None
    finally:
        if added is not None and added in sys.path:
            sys.path.remove(added)
    if not isinstance(model, torch.nn.Module):
        raise ModelSourceError(f"{where}: {func}() returned a {type(model).__name__}, not a torch nn.Module.")
    if weights is not None:
        load_weights(model, weights, caller)
    return model


def load_weights(model, source, caller: str) -> str:
    """Load a checkpoint (path, hub id in the cache, or a dict of tensors) into the built module."""
    torch = import_torch()
    src = TensorDictSource(source, None, "the state dict") if isinstance(source, dict) else resolve_source(source)
    state = {key: src._t[key] if isinstance(src, TensorDictSource) else torch.from_numpy(src.get(key))
             for key in src.keys()}  # noqa: SIM118 - a WeightSource, not a dict
    mine = model.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    if missing or unexpected:
        def few(keys):
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        parts = (([f"missing {few(missing)}"] if missing else [])
                 + ([f"unexpected {few(unexpected)}"] if unexpected else []))
        raise ModelSourceError(f"The weights of {src.name} do not fit the module {flag('build', caller)} made "
                               f"({'; '.join(parts)}).")
    bad = [k for k in mine if tuple(mine[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise ModelSourceError(f"The weights of {src.name} do not fit the module {flag('build', caller)} made: {k} has "
                               f"shape {tuple(state[k].shape)} there and {tuple(mine[k].shape)} in the module.")
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return src.name

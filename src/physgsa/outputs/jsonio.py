"""Plain JSON and nullable columns: what every saved result is made of.

A saved number is a plain Python ``bool``, ``int`` or finite ``float``; a quantity that is
undefined is ``None`` (``null`` in JSON, a missing value in a table), never NaN or inf. The
same values give the same bytes, whether they were just computed or read back from a record.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow
import scipy

from ..core.validation import OutputDirectoryError
from ..core.version import __version__

__all__ = ["jsonable", "plain", "json_default", "nullable", "versions", "read_saved"]


def versions() -> dict[str, str]:
    """The versions of physgsa and of every library its numbers depend on (recorded in each result)."""
    return {
        "physgsa": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
    }


def nullable(values: Iterable[Any]) -> Any:
    """Floats with None (never NaN or inf) for values that are undefined (a pandas ``Float64`` array)."""
    # One array pass (tables hold hundreds of thousands of profile steps): None becomes NaN
    # first, then every non-finite value is masked, with NaN under the mask as pandas puts it.
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    finite = np.isfinite(arr)
    return pd.arrays.FloatingArray(np.where(finite, arr, np.nan), ~finite)


def jsonable(x: Any) -> Any:
    """Plain JSON types; non-finite floats become None (they must not reach a table)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        if x.dtype.kind in "biu" or (x.dtype.kind == "f" and bool(np.isfinite(x).all())):
            return x.tolist()  # already plain: Python bools, ints and finite floats, nothing to replace
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if np.isfinite(x) else None
    return x


def plain(x: Any) -> Any:
    """JSON-ready and exactly what a JSON round trip gives back (a record looks the same whether
    it was just computed or read from a checkpoint, so both give the same output bytes).
    """
    return json.loads(json.dumps(jsonable(x), allow_nan=False))


def json_default(x: Any) -> Any:
    """``json.dumps``'s ``default``: numpy arrays as lists, numpy scalars as Python ones, anything else as text."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def read_saved(directory: Path, document: str, tables: tuple[str, ...], *, what: str,
               command: str) -> tuple[dict[str, Any], list[pd.DataFrame]]:
    """A saved result's JSON document and its parquet tables, or one line saying why they cannot be read.

    ``what`` names the result in the message ("spectra"), ``command`` the command that makes it again.
    """
    try:
        doc = json.loads((directory / document).read_text(encoding="utf-8"))
        frames = [pd.read_parquet(directory / name) for name in tables]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OutputDirectoryError(f"'{directory}' holds no readable physgsa {what} ({type(exc).__name__}: "
                                   f"{str(exc)[:200]}); run {command} again.") from None
    if not isinstance(doc, dict):
        raise OutputDirectoryError(f"'{directory / document}' is not a physgsa {what}; run {command} again.")
    return doc, frames

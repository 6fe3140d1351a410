"""The memory guard: estimate each decomposition's and product's working set before it runs.

``max_memory`` (bytes; ``--max-memory 8G`` on the command line) defaults to 80 % of the memory
the system reports available when the run starts. Before each factor's decomposition and each
interface's products, the float64 working set is estimated from the shapes alone; above the
limit the run stops with a :class:`ResourceLimitError` that names the factor or interface and
gives the estimate, instead of being killed by the system halfway (or swapping for hours).

The estimates count float64 arrays that are alive at once (LAPACK's gesdd workspace is about
``7 r^2`` doubles for ``r = min(m, n)``); they are deliberately generous, since being refused
is better than being killed.
"""

from __future__ import annotations

import os
import re

from .validation import InvalidParameterError, ResourceLimitError

__all__ = ["available_memory", "default_limit", "parse_memory", "svd_bytes", "gram_bytes", "interface_bytes",
           "check_memory", "format_bytes"]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def available_memory() -> int:
    """Bytes the system reports available now (``MemAvailable``; total physical memory elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf: no guard by default
        return 1 << 62


def default_limit() -> int:
    """The default ``max_memory``: 80 % of the available memory."""
    return int(0.8 * available_memory())


def parse_memory(value: object, where: str) -> int:
    """``max_memory`` as bytes: a positive number of bytes, or a string such as "512M", "8G", "1.5GiB"."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)) and value > 0:
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", value.upper().replace("IB", "B"))
        if m and float(m.group(1)) > 0:
            return int(float(m.group(1)) * _UNITS[m.group(2)])
    raise InvalidParameterError(
        f"{where} must be a positive number of bytes or a size such as '512M' or '8G'. Got {value!r} instead."
    )


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def svd_bytes(m: int, n: int) -> int:
    """A factor's decomposition: the float64 matrix, ``A_hat``, ``U``, ``V^T`` and gesdd's workspace."""
    r = min(m, n)
    return 8 * (2 * m * n + m * r + r * n + 7 * r * r)


def gram_bytes(m: int, n: int) -> int:
    """The values-only pass (``physgsa spectra``): the matrix, its Gram and the eigensolver's copy."""
    r = min(m, n)
    return 8 * (m * n + 3 * r * r)


def interface_bytes(n_out: int, n_in: int) -> int:
    """An interface: ``M``, ``M_w``, ``E``, the ICM and heatmap temporaries (about eight
    ``n_out x n_in`` float64 arrays at once).
    """
    return 8 * 8 * n_out * n_in


def check_memory(estimate: int, limit: int | None, what: str) -> None:
    """Raise :class:`ResourceLimitError` if ``estimate`` bytes exceed ``limit``."""
    if limit is not None and estimate > limit:
        raise ResourceLimitError(
            f"{what} needs an estimated {format_bytes(estimate)}, above the memory limit of "
            f"{format_bytes(limit)} (max_memory, --max-memory; the default is 80% of the memory available "
            "at the start). Free memory or raise --max-memory; with --workers N each process needs its own."
        )

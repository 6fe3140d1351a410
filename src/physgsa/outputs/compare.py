"""The result of ``physgsa compare``: per-interface and per-factor tables, the document, the binned panels.

:meth:`CompareResult.save` writes ``compare.parquet``, ``compare_factors.parquet`` and
``compare.json`` through the one staged write; :meth:`CompareResult.load` reads them back.
``compare.html`` is the report's (:func:`physgsa.save` saves and draws in one step); the binned
``|A|`` panels it shows side by side live in ``panels`` and are not saved as data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.validation import OutputDirectoryError
from .directory import OutputLock, held, read_json, refuse_foreign, staged_write
from .jsonio import json_default, read_saved

__all__ = ["CompareResult", "COMPARE_FILES", "IDENTITY", "check_out"]

#: The files ``physgsa compare`` writes into its ``--out`` (its page included).
COMPARE_FILES = ("compare.parquet", "compare_factors.parquet", "compare.json", "compare.html")


#: What makes two comparisons the same (the keys of ``compare.json`` that say what was compared, and how).
IDENTITY = ("base", "others", "change", "parameters")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=json_default))


def check_out(out: str | os.PathLike[str], identity: dict[str, Any], *, overwrite: bool = False) -> None:
    """Refuse an ``out`` that holds the comparison of another input or other parameters (unless ``overwrite``).

    ``identity`` holds some or all of :data:`IDENTITY`, as ``compare.json`` will hold them; only
    the keys given are compared, so the command line can refuse from its arguments alone before
    any work, and again from the whole document before it is saved. Nothing is written.
    """
    path = Path(out) / "compare.json"
    if overwrite or not path.is_file():
        return
    old = read_json(path)
    if old is None:
        raise OutputDirectoryError(f"Output directory '{out}' holds a compare.json that cannot be read. Choose "
                                   "another --out, or pass --overwrite to replace it.")
    diff = []
    for key in (k for k in IDENTITY if k in identity):
        mine, theirs = _plain(identity[key]), _plain(old.get(key))
        if mine == theirs:
            continue
        if isinstance(mine, dict) and isinstance(theirs, dict):
            diff += [f"{k} {theirs.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(mine) | set(theirs))
                     if mine.get(k) != theirs.get(k)]
        else:
            diff.append(f"{key} {theirs!r} -> {mine!r}")
    if diff:
        raise OutputDirectoryError(
            f"Output directory '{out}' holds the comparison of a run of different input or parameters "
            f"({', '.join(diff)}). Choose another --out, or pass --overwrite to replace it.")


@dataclass(frozen=True)
class CompareResult:
    """Tables of one comparison.

    Attributes
    ----------
    interfaces : DataFrame
        One row per interface and OTHER (``compare.parquet``), with the graded certificate under
        the change: ``certified_share_apriori`` / ``certified_share_measured`` (membership shares),
        ``certified_columns_apriori`` / ``certified_columns_measured`` of ``n_units``, and BASE's
        profile at the drift bound and at ``delta_norm`` (``profile_at_*``, ``profile_columns_at_*``;
        docs/definitions.md, "The graded certificate under a change").
    factors : DataFrame
        One row per factor and OTHER (``compare_factors.parquet``).
    document : dict
        JSON-ready: the parameters, the models and the per-interface details (``compare.json``).
    panels : tuple of dict
        Per interface and OTHER, what the page draws side by side: BASE's and OTHER's ``|A|``
        binned (``base``, ``other_map``; rows by BASE's groups), the columns whose support
        changed (``cols``, of ``n_cols``) and the verdicts (``certified``, ``direct_same``,
        ``changed``), with ``other`` and ``interface`` naming it. Not saved: ``load`` leaves it empty.
    """

    interfaces: pd.DataFrame
    factors: pd.DataFrame
    document: dict[str, Any]
    panels: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def save(self, out: str | os.PathLike[str], *, keep_others: bool = False, lock: OutputLock | None = None,
             pages: Callable[[Path], None] | None = None) -> Path:
        """Write compare.parquet, compare_factors.parquet and compare.json into ``out``, together.

        Parameters
        ----------
        out : path
            The output directory (created if missing; physgsa's own files only are replaced).
        keep_others : bool
            Write beside files physgsa did not write instead of refusing.
        lock : OutputLock, optional
            The lock the caller holds on ``out``; without it ``out`` is locked for the save.
        pages : callable, optional
            ``pages(stage)`` adds the report's page to the same stage (:func:`physgsa.save`).
        """
        out = Path(out)

        def fill(stage: Path) -> None:
            self.interfaces.to_parquet(stage / "compare.parquet", index=False, engine="pyarrow", compression="zstd")
            self.factors.to_parquet(stage / "compare_factors.parquet", index=False, engine="pyarrow",
                                    compression="zstd")
            (stage / "compare.json").write_text(json.dumps(self.document, indent=2, sort_keys=True,
                                                           default=json_default) + "\n", encoding="utf-8")
            if pages is not None:
                pages(stage)

        with held(out, lock, what="compare") as own:
            refuse_foreign(out, keep_others, folders=())  # compare writes no figures
            staged_write(out, fill, lock=own)
        return out

    @classmethod
    def load(cls, out: str | os.PathLike[str]) -> CompareResult:
        """Read a saved comparison back from ``out`` (without its panels, which are not saved)."""
        tables = ("compare.parquet", "compare_factors.parquet")
        doc, (interfaces, factors) = read_saved(Path(out), "compare.json", tables, what="comparison", command="compare")
        return cls(interfaces=interfaces, factors=factors, document=doc)

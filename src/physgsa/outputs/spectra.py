"""The result of ``physgsa spectra``: one row per matrix, what was not analysed, and the run's record.

:meth:`SpectraResult.save` writes ``spectra.parquet`` and ``spectra.json`` (the record, with
the skipped tensors) through the one staged write; :meth:`SpectraResult.load` reads them back.
``spectra.html`` is the report's (:func:`physgsa.save` saves and draws in one step).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.validation import OutputDirectoryError
from .directory import OutputLock, held, staged_write
from .jsonio import jsonable, read_saved

__all__ = ["SpectraResult", "SPECTRA_FILES", "depth_order", "natural_key"]

#: The files ``physgsa spectra`` writes into its ``--out`` (its page included).
SPECTRA_FILES = ("spectra.parquet", "spectra.json", "spectra.html")


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders the numbers inside names by value: ``h.2`` before ``h.10`` (depth order)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(name)) if p)


def depth_order(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a spectra table in depth order: names sorted with their numbers by value (``h.2``
    before ``h.10``), ties in their original order.
    """
    if not len(table) or "name" not in table.columns:
        return table
    order = sorted(range(len(table)), key=lambda i: natural_key(str(table["name"].iloc[i])))
    ordered: pd.DataFrame = table.iloc[order].reset_index(drop=True)
    return ordered


@dataclass(frozen=True)
class SpectraResult:
    """One row per matrix (``table``), what was not analysed (``skipped``), and the run's record."""

    table: pd.DataFrame
    skipped: list[dict[str, Any]]
    record: dict[str, Any]

    def save(self, out: str | os.PathLike[str], *, keep_others: bool = False, lock: OutputLock | None = None,
             pages: Callable[[Path], None] | None = None) -> Path:
        """Write ``spectra.parquet`` and ``spectra.json`` into ``out``, together (staged, then renamed).

        Parameters
        ----------
        out : path
            The output directory (created if missing). One that holds files but no physgsa
            results is refused, unless ``keep_others``.
        keep_others : bool
            Write into a directory that holds other files (they are left untouched).
        lock : OutputLock, optional
            The lock the caller holds on ``out``; without it ``out`` is locked for the save.
        pages : callable, optional
            ``pages(stage)`` adds the report's page to the same stage (:func:`physgsa.save`).
        """
        out = Path(out)
        if out.is_dir() and not keep_others and any(not p.name.startswith(".physgsa-") for p in out.iterdir()) \
                and not (out / "spectra.json").exists() and not (out / "certificate.json").exists():
            raise OutputDirectoryError(f"Output directory '{out}' is not empty and holds no physgsa results; "
                                       "refusing to write into it. Choose an empty or new directory.")

        def fill(stage: Path) -> None:
            self.table.to_parquet(stage / "spectra.parquet", index=False, engine="pyarrow", compression="zstd")
            doc = {**self.record, "skipped": self.skipped}
            (stage / "spectra.json").write_text(json.dumps(jsonable(doc), indent=2, sort_keys=True, allow_nan=False)
                                                + "\n", encoding="utf-8")
            if pages is not None:
                pages(stage)

        with held(out, lock, what="spectra") as own:
            staged_write(out, fill, lock=own)
        return out

    @classmethod
    def load(cls, out: str | os.PathLike[str]) -> SpectraResult:
        """Read saved spectra back from ``out`` (``spectra.parquet`` and ``spectra.json``)."""
        doc, (table,) = read_saved(Path(out), "spectra.json", ("spectra.parquet",), what="spectra", command="spectra")
        skipped = doc.pop("skipped", [])
        return cls(table=table, skipped=skipped, record=doc)

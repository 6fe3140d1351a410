"""The study's result: one entry per model (with its certificate) and study.parquet's table.

A :class:`StudyResult` is what :func:`physgsa.runs.study.study` returns (the models it
certified itself are already saved, each in its own ``OUT/runs/NAME/``).
:meth:`StudyResult.save` writes ``OUT/study.parquet`` (one row per model-interface);
:meth:`StudyResult.load` reads a saved study back, each entry's certificate from its run
directory. The page ``study.html`` and the panels under ``OUT/figures/`` are drawn by
:mod:`physgsa.report.study`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .directory import FIGURES_DIR, OutputLock, held, refuse_foreign, staged_write
from .result import Result, load_result

__all__ = ["Entry", "StudyResult", "STUDY_FILES", "RUNS_DIR", "OWN_ENTRIES", "OWN_FIGURE"]

#: What a study writes into its output directory, in the order it is written (the page last).
STUDY_FILES = ("study.parquet", FIGURES_DIR, "study.html")
#: The folder of the models a study certified itself (``OUT/runs/NAME/``, each a certify output).
RUNS_DIR = "runs"
#: Every entry physgsa writes into a study's output directory (besides ``.physgsa-*`` entries).
OWN_ENTRIES = ("study.parquet", "study.html", FIGURES_DIR, RUNS_DIR)
#: The study's own panels under ``OUT/figures/`` (anything else there is left alone).
OWN_FIGURE = re.compile(r"^study-[a-z0-9-]+\.svg$")
#: The label of a random-weights control: its trained model's label, " (random)", and a count
#: where a label came twice.
_CONTROL = re.compile(r"^(.*) \(random\)(?: \(\d+\))?$")


@dataclass(frozen=True)
class Entry:
    """One model of a study: how it is named and classed, and its certificate.

    ``weights`` is ``"trained"`` (a bundled trained network), ``"random"`` (seeded random weights
    of the same architecture) or ``"as given"`` (a model or result whose training physgsa cannot
    know). ``run`` is the certify output directory the result was read from or saved to;
    ``fresh`` says that the study certified it just now (its report is drawn with the study's).
    """

    label: str
    family: str
    architecture: str
    weights: str
    origin: str
    run: str | None
    result: Result
    pair: str = ""  # the label of the trained model a random control belongs to (its colour)
    fresh: bool = False


@dataclass(frozen=True)
class StudyResult:
    """What ``study`` returns: the entries (one per model, in the order given) and the table.

    ``table`` is study.parquet: one row per model-interface (the columns
    :data:`physgsa.runs.study.COLUMNS`; missing values are nulls).
    """

    entries: tuple[Entry, ...]
    table: pd.DataFrame

    def save(self, out: str | os.PathLike[str], *, keep_others: bool = False, lock: OutputLock | None = None,
             pages: Callable[[Path], None] | None = None) -> Path:
        """Write ``out/study.parquet`` (staged, then renamed into place).

        Parameters
        ----------
        out : path
            The study's output directory (created if missing). One holding files a study did not
            write is refused, naming them, unless ``keep_others``.
        keep_others : bool
            Write beside files physgsa did not write (they are left untouched).
        lock : OutputLock, optional
            The lock the caller holds on ``out``; without it ``out`` is locked for the save.
        pages : callable, optional
            ``pages(stage)`` adds the report's page and panels to the same stage
            (:func:`physgsa.save`): they are renamed into place with the table, ``study.html``
            last, and the study's stale panels under ``out/figures/`` go.
        """
        out = Path(out)

        def fill(stage: Path) -> None:
            self.table.to_parquet(stage / "study.parquet", index=False, engine="pyarrow", compression="zstd")
            if pages is not None:
                pages(stage)

        with held(out, lock, what="study") as own:
            refuse_foreign(out, keep_others, own=OWN_ENTRIES, who="physgsa study")
            staged_write(out, fill, lock=own, last=None if pages is None else "study.html",
                         folders={FIGURES_DIR: OWN_FIGURE})
        return out

    @classmethod
    def load(cls, out: str | os.PathLike[str]) -> StudyResult:
        """A saved study, read back: study.parquet, and each model's certificate from its run directory."""
        table = pd.read_parquet(Path(out) / "study.parquet")
        entries = []
        for _, row in table.drop_duplicates("model").iterrows():
            label, run = str(row["model"]), row["run"]
            control = _CONTROL.match(label) if row["weights"] == "random" else None
            entries.append(Entry(label, str(row["family"]), str(row["architecture"]), str(row["weights"]),
                                 str(row["origin"]), None if run is pd.NA else str(run), load_result(run),
                                 pair=control.group(1) if control else ""))
        return cls(tuple(entries), table)

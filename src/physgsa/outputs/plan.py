"""The result of ``physgsa plan``: one format per block within a bits budget, and the planned weights.

:meth:`PlanResult.save` writes ``plan.json`` (last, through the one staged write) and, when the
plan was applied, ``checkpoint/model.safetensors`` (every tensor of the model, the planned
blocks' weights quantized as planned and stored dequantized: floats as float32, integers as
int64, names as in the model's own checkpoint) with ``checkpoint/config.json`` where the model
has a config. ``plan.html`` is the report's (:func:`physgsa.save` saves and draws in one step).
:meth:`PlanResult.load` reads ``plan.json`` back (not the checkpoint).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import umask
from ..core.validation import OutputDirectoryError
from .directory import OutputLock, held, read_json, refuse_foreign, staged_write
from .jsonio import json_default

__all__ = ["PlanResult", "PLAN_FILES", "CHECKPOINT_DIR", "CHECKPOINT_FILES"]

#: The folder of the planned weights (``--apply``) and the files physgsa writes there.
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILES = ("model.safetensors", "config.json")
#: The files ``physgsa plan`` writes into its ``--out`` (its page included).
PLAN_FILES = ("plan.json", "plan.html", CHECKPOINT_DIR)

_OWN_CHECKPOINT = re.compile("^(" + "|".join(re.escape(f) for f in CHECKPOINT_FILES) + ")$")


@dataclass(frozen=True)
class PlanResult:
    """A plan.

    Attributes
    ----------
    document : dict
        What ``plan.json`` holds: the budget and the bits reached (exact fractions as ``"p/q"``
        beside their floats), the format, bits and predicted damage of every block, the
        predicted damage of every block in every format, the uniform alternatives, the matrices
        of each block, the number of weights outside the blocks, the parameters.
    checkpoint : mapping of str to ndarray, optional
        With ``apply``: every tensor of the planned model, by the model's own names.
    config : dict, optional
        With ``apply``: the model's config, written beside the weights.
    """

    document: dict[str, Any]
    checkpoint: Mapping[str, np.ndarray] | None = None
    config: dict[str, Any] | None = None

    @property
    def assignment(self) -> dict[str, str]:
        """Block name -> format name."""
        return {b["block"]: b["format"] for b in self.document["blocks"]}

    def save(self, out: str | os.PathLike[str], *, keep_others: bool = False, lock: OutputLock | None = None,
             pages: Callable[[Path], None] | None = None) -> Path:
        """Write plan.json (and, when applied, checkpoint/) into ``out``, together.

        Parameters
        ----------
        out : path
            The output directory (created if missing; physgsa's own files only are replaced). A
            ``checkpoint/`` left there by an earlier ``--apply`` is removed when this plan was not
            applied (it would not be this plan's), unless it holds files physgsa did not write.
        keep_others : bool
            Write beside files physgsa did not write instead of refusing.
        lock : OutputLock, optional
            The lock the caller holds on ``out``; without it ``out`` is locked for the save.
        pages : callable, optional
            ``pages(stage)`` adds the report's page to the same stage (:func:`physgsa.save`).
        """
        out = Path(out)

        def fill(stage: Path) -> None:
            if self.checkpoint is not None:
                # Here, not at the top: the report imports this module, and `physgsa spectra` of a
                # checkpoint must not load safetensors' torch-side modules (tests/cli/test_spectra_cli.py).
                from safetensors.numpy import save_file

                folder = stage / CHECKPOINT_DIR
                folder.mkdir()
                # One metadata key: with more, their order in the header changes from run to run.
                save_file({k: np.ascontiguousarray(v) for k, v in sorted(self.checkpoint.items())},
                          str(folder / "model.safetensors"), metadata={"format": "pt"})
                os.chmod(folder / "model.safetensors", 0o666 & ~umask())  # safetensors writes it private
                if self.config is not None:
                    (folder / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True,
                                                                   default=json_default) + "\n", encoding="utf-8")
            if pages is not None:
                pages(stage)
            (stage / "plan.json").write_text(json.dumps(self.document, indent=2, sort_keys=True,
                                                        default=json_default) + "\n", encoding="utf-8")

        with held(out, lock, what="plan") as own:
            refuse_foreign(out, keep_others, folders=(CHECKPOINT_DIR,))
            old = out / CHECKPOINT_DIR
            stale = (self.checkpoint is None and old.is_dir()
                     and all(_OWN_CHECKPOINT.match(p.name) for p in old.iterdir()))
            staged_write(out, fill, lock=own, last="plan.json", folders={CHECKPOINT_DIR: _OWN_CHECKPOINT},
                         drop=(CHECKPOINT_DIR,) if stale else ())
        return out

    @classmethod
    def load(cls, out: str | os.PathLike[str]) -> PlanResult:
        """Read a saved plan back from ``out`` (``plan.json``; the checkpoint is not read)."""
        path = Path(out) / "plan.json"
        doc = read_json(path) if path.is_file() else None
        if not isinstance(doc, dict) or "blocks" not in doc:
            raise OutputDirectoryError(f"'{out}' holds no readable physgsa plan (plan.json); run physgsa plan again.")
        return cls(document=doc)

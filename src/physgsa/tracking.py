"""Spectra during training: one trajectory table, appended at each save.

:func:`record_spectra` runs the fast spectra pass (``physgsa.spectra``) on a model and appends
its rows, tagged with the training step, to one parquet table (rewritten atomically, so a crash
never leaves half a table). :class:`SpectraCallback` does it from a transformers ``Trainer`` at
every save (``on_save``), and optionally certifies too. The table has one row per (step,
matrix) with every column of ``spectra.parquet``; ``physgsa compare``'s readers and any
dataframe tool can plot ``rho``, ``s_hat``, ``k_q`` or ``alpha`` against ``step``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .api import certify, save, spectra
from .models import load_chain
from .outputs.directory import atomic_write

try:
    from transformers import TrainerCallback as _CallbackBase
except ImportError:  # pragma: no cover - the callback needs transformers; record_spectra does not
    _CallbackBase = object

__all__ = ["record_spectra", "SpectraCallback", "read_trajectory"]


def read_trajectory(table) -> pd.DataFrame:
    """The trajectory table (empty when it does not exist yet)."""
    path = Path(table)
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()


def record_spectra(model, *, step: int, table, certify_dir=None, **spectra_params) -> pd.DataFrame:
    """Append the spectra of ``model`` (anything ``physgsa.spectra`` accepts) at ``step`` to ``table``.

    With ``certify_dir``, also certify the model there (``certify_dir/step-NNNNNN``). Returns the
    whole table.
    """
    res = spectra(model, **spectra_params)
    rows = res.table.copy()
    rows.insert(0, "step", int(step))
    old = read_trajectory(table)
    if len(old) and (old["step"] == int(step)).any():
        old = old[old["step"] != int(step)]  # a step saved twice keeps its latest record
    out = pd.concat([old, rows], ignore_index=True) if len(old) else rows
    path = Path(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: out.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd"))
    if certify_dir is not None:
        save(certify(load_chain(model)), Path(certify_dir) / f"step-{int(step):06d}")
    return out


class SpectraCallback(_CallbackBase):
    """A transformers ``TrainerCallback``: at every save, :func:`record_spectra` of the model.

    Parameters
    ----------
    table : path
        The trajectory table (parquet) to append to.
    certify_dir : path, optional
        Also certify at each save, into ``certify_dir/step-NNNNNN``.
    """

    def __init__(self, table, *, certify_dir=None, **spectra_params):
        self.table, self.certify_dir, self.params = Path(table), certify_dir, spectra_params

    def on_save(self, args, state, control, model=None, **kwargs):
        if model is not None:
            record_spectra(model, step=state.global_step, table=self.table, certify_dir=self.certify_dir,
                           **self.params)
        return control

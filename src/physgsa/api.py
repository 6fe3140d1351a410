"""Entry points that take a model or a file: ``spectra`` (the fast pass) and ``chain_from``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the survey (pandas, the power-law fits) loads only when spectra runs
    from .runs.spectra import SpectraResult

__all__ = ["spectra", "chain_from", "save"]


def _is_matrix_file(source) -> bool:
    if not isinstance(source, (str, Path)):
        return False
    p = Path(source)
    return p.suffix == ".npz" or (p.suffix == ".safetensors" and not (p.parent / "config.json").is_file())


def chain_from(source=None, *, order=None, **model_params):
    """A chain from ``example``, a matrix file (.npz, or .safetensors without config.json), or a model.

    ``model_params`` go to :func:`physgsa.models.load_chain`: among them ``sample=`` (an input
    batch: the generic walker finds the residual blocks of an nn.Module by running it),
    ``build="file.py:function"`` with ``sample_shape=`` (makes the module by running that file's
    code; ``source`` is then omitted, or a checkpoint whose weights are loaded into it) and
    ``caller="cli"`` (error messages name command-line flags).
    """
    from .core.examples import example_chain
    from .models.files import SafetensorsFile, read_chain

    walker = any(model_params.get(k) is not None for k in ("sample", "sample_shape", "build"))
    if isinstance(source, str) and source == "example" and not walker:
        return example_chain()
    if _is_matrix_file(source) and not walker:
        if Path(source).suffix == ".safetensors" and Path(source).is_file():
            stored = SafetensorsFile(Path(source))
            names = stored.keys()
            if any(len(stored.shape(k)) != 2 for k in names):
                # A state dict (conv kernels, norm vectors), not a stack of factor matrices: an
                # adapter may know its weight names; load_chain says how to give the layout if not.
                from .models import load_chain

                return load_chain(source, **model_params)
        return read_chain(source, order=order)
    from .models import load_chain

    return load_chain(source, **model_params)


def spectra(source="minilm", **params) -> "SpectraResult":
    """Part I quantities and WeightWatcher's metrics of every weight of ``source``.

    ``source`` is a model (bundled name, folder, file with config.json, hub id in the local
    cache, nn.Module), a state dict or tensor file without config (``.safetensors``, ``.pt``,
    ``.pth``, ``.bin``, ``.npz``: every tensor read by its shape), or ``example``. Parameters:
    ``q``, ``chart``, ``window_band``, ``gap_floor``, ``exclude``, ``max_memory`` (validated as
    in :data:`physgsa.runs.spectra.SPECTRA_PARAMS`). See :func:`physgsa.runs.spectra.spectra_source`.
    """
    from .runs.spectra import spectra_source

    return spectra_source(source, **params)


def save(result, out, *, keep_others: bool = False) -> Path:
    """Save ``result`` into ``out``, then draw its pages: compute, then save, then render.

    Every entry point (the command line, the notebook) ends here, so a result type never needs
    to know about the report.
    """
    return result.save(out, keep_others=keep_others)

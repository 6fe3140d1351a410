"""Entry points that take a model or a file: ``spectra`` (the fast pass) and ``chain_from``."""

from __future__ import annotations

from pathlib import Path

from ._validation import check_params
from .survey import SPECTRA_PARAMS, SpectraResult, spectra_of

__all__ = ["spectra", "chain_from"]


def _is_matrix_file(source) -> bool:
    if not isinstance(source, (str, Path)):
        return False
    p = Path(source)
    return p.suffix == ".npz" or (p.suffix == ".safetensors" and not (p.parent / "config.json").is_file())


def chain_from(source, *, order=None, **model_params):
    """A chain from ``example``, a matrix file (.npz, or .safetensors without config.json), or a model."""
    from .examples import example_chain
    from .io import read_chain

    if isinstance(source, str) and source == "example":
        return example_chain()
    if _is_matrix_file(source):
        return read_chain(source, order=order)
    from .adapters import load_chain

    return load_chain(source, **model_params)


def spectra(source="minilm", **params) -> SpectraResult:
    """Part I quantities and WeightWatcher's metrics of every weight matrix of ``source``.

    ``source`` is a model (bundled name, folder, file with config.json, hub id in the local
    cache, nn.Module), or a matrix file (every array in it). Parameters: ``q``, ``chart``,
    ``window_band``, ``gap_floor``, ``exclude`` (validated as in
    :data:`physgsa.survey.SPECTRA_PARAMS`).
    """
    if _is_matrix_file(source) or source == "example":
        chain = chain_from(source)
        items = ((f.name, f.matrix, f.name, "") for f in chain.factors)
        return spectra_of(items, source=chain.source, **params)
    from .adapters import ModelSourceError, detect, resolve_source
    from .adapters.weights import raw_matrices

    src = resolve_source(source)
    try:
        arch = detect(src)
    except ModelSourceError:
        arch = "unknown"  # every 2-D weight as stored: no architecture knowledge needed
    exclude = check_params("spectra", SPECTRA_PARAMS, params)["exclude"]
    return spectra_of(raw_matrices(src, arch, exclude=exclude), source=src.name, **params)

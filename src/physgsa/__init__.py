"""physgsa: geometric and spectral alignment of residual networks, certified.

Implements "Geometric and Spectral Alignment for Deep Neural Network I and II"
(arXiv 2605.02108, 2605.02111) as docs/definitions.md defines it. The core (this package
minus the model adapters) is pure numpy/scipy on float64 arrays and imports without torch.

The public names below are imported on first use (PEP 562), so that ``import physgsa`` and a
command such as ``physgsa --help`` or ``physgsa spectra`` pay only for the modules they use
(``certify`` alone pulls in pandas, scipy and the whole pipeline).
"""

import sys as _sys
import types as _types

__version__ = "0.2.0"

from .core.validation import CertificateBugError, ChainFileError, EnvironmentFailure, InvalidFactorError, InvalidParameterError, OutputDirectoryError, PhysgsaError, ResourceLimitError

__all__ = [
    "__version__",
    "certify",
    "spectra",
    "chain_from",
    "CERTIFY_PARAMS",
    "Chain",
    "Factor",
    "Result",
    "load_result",
    "read_chain",
    "example_chain",
    "PhysgsaError",
    "InvalidParameterError",
    "InvalidFactorError",
    "ChainFileError",
    "OutputDirectoryError",
    "ResourceLimitError",
    "CertificateBugError",
    "EnvironmentFailure",
]

#: Public name -> the submodule that defines it (imported when the name is first used).
_LAZY = {
    "Chain": "core.chain",
    "Factor": "core.chain",
    "example_chain": "core.examples",
    "read_chain": "models.files",
    "CERTIFY_PARAMS": "runs.certify",
    "certify": "runs.certify",
    "Result": "outputs.result",
    "load_result": "outputs.result",
    "chain_from": "api",
    "spectra": "api",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later uses are plain attribute reads
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _Package(_types.ModuleType):
    """``physgsa.spectra`` is the function (:func:`physgsa.api.spectra`), as it always was.

    Importing the submodule ``physgsa.spectra`` (the per-factor quantities) makes Python set the
    package's attribute ``spectra`` to that submodule; with the public names imported lazily this
    can now happen after the function was bound, so that one assignment is ignored here. The
    submodule stays importable (``from physgsa.spectra import compute_spectrum``) through
    ``sys.modules``.
    """

    def __setattr__(self, name, value):
        if name == "spectra" and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

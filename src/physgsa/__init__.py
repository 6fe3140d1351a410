"""physgsa: geometric and spectral alignment of residual networks, certified.

Implements "Geometric and Spectral Alignment for Deep Neural Network I and II"
(arXiv 2605.02108, 2605.02111) as docs/definitions.md defines it. The core (this package
minus the model adapters) is pure numpy/scipy on float64 arrays and imports without torch.

The public names below are imported on first use (PEP 562), so that ``import physgsa`` and a
command such as ``physgsa --help`` or ``physgsa spectra`` pay only for the modules they use
(``certify`` alone pulls in pandas, scipy and the whole pipeline).
"""

from importlib import import_module

# Light (no numpy): every command reports its errors through them.
from .core.validation import (
    CertificateBugError,
    ChainFileError,
    EnvironmentFailure,
    InvalidFactorError,
    InvalidParameterError,
    OutputDirectoryError,
    PhysgsaError,
    ResourceLimitError,
)
from .core.version import __version__

__all__ = [
    "__version__",
    "certify",
    "spectra",
    "chain_from",
    "load_chain",
    "compare",
    "study",
    "plan",
    "save",
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
    "certify": "api",
    "Result": "outputs.result",
    "load_result": "api",
    "chain_from": "api",
    "spectra": "api",
    "compare": "api",
    "study": "api",
    "plan": "api",
    "save": "api",
    "load_chain": "api",
}

#: Subpackages and modules reachable as attributes after a plain ``import physgsa``
#: (``physgsa.adapters.load_chain``, ``physgsa.tracking.SpectraCallback``), imported on first use.
_LAZY_MODULES = {"adapters": "adapters", "models": "models", "tracking": "tracking", "core": "core",
                 "runs": "runs", "outputs": "outputs", "report": "report"}


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        value = import_module(f".{_LAZY_MODULES[name]}", __name__)
    elif name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later uses are plain attribute reads
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))

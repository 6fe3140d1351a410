"""physgsa: geometric and spectral alignment of residual networks, certified.

Implements "Geometric and Spectral Alignment for Deep Neural Network I and II"
(arXiv 2605.02108, 2605.02111) as docs/definitions.md defines it. The core (this package
minus the model adapters) is pure numpy/scipy on float64 arrays and imports without torch.
"""

__version__ = "0.2.0"

from ._validation import (  # noqa: E402
    CertificateBugError,
    ChainFileError,
    EnvironmentFailure,
    InvalidFactorError,
    InvalidParameterError,
    OutputDirectoryError,
    PhysgsaError,
    ResourceLimitError,
)
from .chain import Chain, Factor  # noqa: E402
from .examples import example_chain  # noqa: E402
from .io import read_chain  # noqa: E402
from .pipeline import CERTIFY_PARAMS, certify  # noqa: E402
from .result import Result, load_result  # noqa: E402
from .api import chain_from, spectra  # noqa: E402

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

"""One checker for every boundary: named errors and parameter tables.

Every public entry point declares its keyword parameters in one table (a dict of
:class:`Param`) and calls :func:`check_params` once. Errors are subclasses of
``ValueError`` whose message says what was wrong and how to fix it, in the manner of
scikit-learn: "The 'q' parameter of certify must be a float in (0, 1). Got 1.5 instead."
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

__all__ = [
    "PhysgsaError",
    "InvalidParameterError",
    "InvalidFactorError",
    "ChainFileError",
    "OutputDirectoryError",
    "ResourceLimitError",
    "CertificateBugError",
    "EnvironmentFailure",
    "Param",
    "check_params",
    "command_line",
    "on_command_line",
    "spell",
    "unset",
    "did_you_mean",
]

#: Who is asking: "python" (the arguments of the API) or "cli" (the flags of the command line).
#: Every message names a parameter through :func:`spell`, which reads it.
_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("physgsa_caller", default="python")
_UNGIVEN: Any = object()


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """Inside this context every message names command-line flags (``--n-groups 3``), not arguments."""
    token = _CALLER.set("cli")
    try:
        yield
    finally:
        _CALLER.reset(token)


def on_command_line() -> bool:
    """Whether messages name flags (inside :func:`command_line`)."""
    return _CALLER.get() == "cli"


def spell(name: str, value: Any = _UNGIVEN) -> str:
    """A parameter as the caller writes it: ``--sample-shape`` / ``--mode jacobian`` on the command
    line, ``sample_shape=`` / ``mode='jacobian'`` in Python.
    """
    if on_command_line():
        flag = "--" + name.replace("_", "-")
        if value is _UNGIVEN or value is True:
            return flag
        text = ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
        return f"{flag} {text}"
    return f"{name}=" if value is _UNGIVEN else f"{name}={value!r}"


def unset(name: str, default: Any = None) -> str:
    """How the caller leaves a parameter at its default: ``leave out --device`` / ``device=None``."""
    return f"leave out {spell(name)}" if on_command_line() else f"{name}={default!r}"


def did_you_mean(value: Any, known: Any) -> str:
    """`` Did you mean 'x'?`` for a mistyped name close to one of ``known``, else ``""``."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(k) for k in known], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


class PhysgsaError(ValueError):
    """Base class of every input error physgsa raises (a ValueError)."""


class InvalidParameterError(PhysgsaError):
    """A parameter of an entry point has a wrong type or value."""


class InvalidFactorError(PhysgsaError):
    """A factor matrix is unusable (zero, non-finite, wrong shape, non-numeric)."""


class ChainFileError(PhysgsaError):
    """A chain file is missing, unreadable, truncated or holds unusable arrays."""


class OutputDirectoryError(PhysgsaError):
    """The output directory cannot be written without losing somebody's files."""


class ResourceLimitError(PhysgsaError):
    """A decomposition or product would need more memory than the run may use (``max_memory``)."""


class CertificateBugError(RuntimeError):
    """A proven identity or bound failed: this is a bug in physgsa, never bad input.

    Raised loudly (definitions section 5: "certified but not equal is a bug").
    """


class EnvironmentFailure(RuntimeError):
    """The machine failed a run midway (disk full, file-size limit, a worker process killed, every
    Dask worker lost): not bad input and not a bug. The records written so far are kept, so the
    same command resumes the run once the cause is gone.
    """


@dataclass(frozen=True)
class Param:
    """One keyword parameter: its default and the rule its value must satisfy.

    Parameters
    ----------
    default : object
        The default value.
    kind : {"float", "int", "bool", "choice", "floats", "any"}
        The value's type.
    low, high : float, optional
        Bounds of the allowed interval.
    closed : str
        Which ends are closed: "both", "left", "right" or "neither".
    choices : tuple of str
        Allowed values for ``kind="choice"``.
    extra : callable, optional
        A further validator for values not covered by ``kind`` (for example a mapping of
        user-given groups); it returns the normalized value or raises.
    doc : str
        One line for the Python API's documentation.
    allow_none : bool
        Whether None is allowed (and returned as it is).
    help : str
        The command line's help text of the option made from this parameter; a parameter
        without one is no option of any command.
    flags : tuple of str
        The option's names on the command line; default ``--name`` with ``_`` written ``-``.
    cli_type : type, optional
        The command line's type of the value where it is not the kind's (``float``, ``int``,
        ``bool`` as a switch, else ``str``): for example ``Path`` or ``list[str]`` (repeatable).
        A ``default`` of ``...`` makes the option required.
    """

    default: Any
    kind: str
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    choices: tuple[Any, ...] = ()
    extra: Callable[[Any, str], Any] | None = None
    doc: str = ""
    allow_none: bool = False
    help: str = ""
    flags: tuple[str, ...] = ()
    cli_type: Any = None

    def describe(self) -> str:
        if self.kind == "choice":
            opts = ", ".join(repr(c) for c in self.choices)
            return f"one of {{{opts}}}"
        if self.kind == "bool":
            return "a bool"
        noun = {"float": "a float", "int": "an int", "floats": "a sequence of floats"}.get(self.kind, "a value")
        if self.low is None and self.high is None:
            return noun
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        lo = "-inf" if self.low is None else _fmt(self.low)
        hi = "inf" if self.high is None else _fmt(self.high)
        return f"{noun} in {left}{lo}, {hi}{right}"

    def _in_range(self, x: float) -> bool:
        if self.low is not None:
            if self.closed in ("both", "left"):
                if not x >= self.low:
                    return False
            elif not x > self.low:
                return False
        if self.high is not None:
            if self.closed in ("both", "right"):
                if not x <= self.high:
                    return False
            elif not x < self.high:
                return False
        return True

    def check(self, value: Any, name: str, entry: str) -> Any:
        """Return the normalized value or raise :class:`InvalidParameterError`."""
        if value is None and self.allow_none:
            return None
        where = spell(name) if on_command_line() else f"The '{name}' parameter of {entry}"
        if self.extra is not None and (self.kind == "any" or not isinstance(value, (str, numbers.Number, bool))):
            return self.extra(value, where)
        bad = InvalidParameterError(f"{where} must be {self.describe()}. Got {value!r} instead.")
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise InvalidParameterError(f"{bad}{did_you_mean(value, self.choices)}")
            return value
        if self.kind == "bool":
            if not isinstance(value, (bool,)) and not (isinstance(value, numbers.Integral) and value in (0, 1)):
                raise bad
            return bool(value)
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise bad
            if not self._in_range(int(value)):
                raise bad
            return int(value)
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise bad
            x = float(value)
            if x != x or not self._in_range(x):
                raise bad
            return x
        if self.kind == "floats":
            try:
                xs = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise bad from None
            if any(isinstance(v, bool) for v in value) or not all(self._in_range(x) for x in xs):
                raise bad
            return xs
        return value


def _fmt(x: float) -> str:
    return repr(int(x)) if float(x).is_integer() else repr(x)


def check_params(entry: str, table: Mapping[str, Param], given: Mapping[str, Any]) -> dict[str, Any]:
    """Validate keyword parameters of ``entry`` against its table.

    Returns every parameter of the table, the defaults filled in, normalized.
    An unknown name raises with the list of the known ones.
    """
    unknown = sorted(set(given) - set(table))
    if unknown:
        known = ", ".join(sorted(table))
        raise InvalidParameterError(
            f"{entry} got an unknown parameter {unknown[0]!r}. Known parameters: {known}."
        )
    out = {}
    for name, spec in table.items():
        value = given.get(name, spec.default)
        out[name] = spec.check(value, name, entry)
    return out

"""The Python entry points: compute, then save, then render.

Each function takes its parameters by keyword, with the defaults of its parameter table
(:data:`physgsa.runs.certify.CERTIFY_PARAMS`, :data:`physgsa.runs.spectra.SPECTRA_PARAMS`,
:data:`physgsa.runs.compare.COMPARE_PARAMS`, :data:`physgsa.models.MODEL_PARAMS`): the table
validates them, and ``tests/test_api.py`` checks that every default written here is the table's.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from . import models
from .core.validation import InvalidParameterError

if TYPE_CHECKING:  # the runs load pandas and scipy; they are imported when a function is called
    from .core.chain import Chain
    from .outputs.compare import CompareResult
    from .outputs.plan import PlanResult
    from .outputs.result import Result
    from .outputs.spectra import SpectraResult
    from .outputs.study import StudyResult

__all__ = ["certify", "spectra", "compare", "study", "plan", "save", "chain_from", "load_chain", "load_result"]

Progress = Callable[[str, int, int, str], None]
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _named_errors(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """An unknown keyword is refused as :class:`~physgsa.InvalidParameterError` naming the known
    ones (as the parameter tables do), not as Python's bare ``TypeError``; the signature stays.
    """
    known = list(inspect.signature(func).parameters)

    @functools.wraps(func)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise InvalidParameterError(f"{func.__name__} got an unknown parameter {unknown[0]!r}. Known parameters: "
                                        f"{', '.join(sorted(known))}.")
        return func(*args, **kwargs)

    return checked



@_named_errors
def load_chain(source: Any = None, *, factor: str = "full", interfaces: str = "blocks", conv: str = "dc",
               freq: tuple[int, int, int] = (0, 0, 8), mode: str = "static", inputs: Any = None, seed: int = 0,
               tokens: str = "uniform", sample: Any = None, sample_shape: Any = None,
               build: str | None = None, caller: str = "python") -> Chain:
    """The factor chain of a model (:func:`physgsa.models.load_chain`; parameters in ``MODEL_PARAMS``).

    ``source`` is a bundled name (``minilm``), a folder or checkpoint with its ``config.json``, a
    Hugging Face id in the local cache, a state dict or an ``nn.Module``; ``sample=`` (an input
    batch) lets the generic walker find the residual blocks of any module by running it.
    ``caller="cli"`` makes error messages name command-line flags instead of arguments.
    """
    return models.load_chain(source, factor=factor, interfaces=interfaces, conv=conv, freq=freq, mode=mode,
                             inputs=inputs, seed=seed, tokens=tokens, sample=sample, sample_shape=sample_shape,
                             build=build, caller=caller)


@_named_errors
def chain_from(source: Any = None, *, order: Sequence[str] | None = None, factor: str = "full",
               interfaces: str = "blocks", conv: str = "dc", freq: tuple[int, int, int] = (0, 0, 8),
               mode: str = "static", inputs: Any = None, seed: int = 0, tokens: str = "uniform", sample: Any = None,
               sample_shape: Any = None, build: str | None = None, caller: str = "python") -> Chain:
    """A chain from ``example``, a matrix file (.npz, or .safetensors of 2-D arrays), or a model.

    A matrix file's arrays are the factors, in the file's key order or in ``order``; anything
    else goes to :func:`load_chain` with the other parameters.
    """
    return models.chain_from(source, order=order, factor=factor, interfaces=interfaces, conv=conv, freq=freq,
                             mode=mode, inputs=inputs, seed=seed, tokens=tokens, sample=sample,
                             sample_shape=sample_shape, build=build, caller=caller)


@_named_errors
def certify(chain: Chain, *, q: float = 0.9, chart: str = "top", groups: Any = "auto", n_groups: int = 8,
            units: str = "channels", threshold: str = "gap", eta: float = 0.5, kappa_fraction: float = 0.05,
            hub_degree: int = 3, support_quantile: float = 0.8, outlier_factor: float = 10.0,
            full_support: float = 0.95, identical_supports: float = 0.5, outlier_columns: float = 0.01,
            outlier_energy: float = 0.5, pair_radius: str = "l2", safety: float = 0.9, tau_e: float = 0.5,
            tau_rho: float = 0.5, window_band: float | None = None, gap_floor: float = 1e-3, n_perturbations: int = 32,
            perturbation: str = "blocks", below: Sequence[float] = (0.25, 0.5, 0.9),
            above: Sequence[float] = (1.1, 1.5, 2.0, 4.0), window_search: bool = False, route: str = "fast",
            seed: int = 0, workers: int = 1, scheduler: str | None = None, dask_local: int = 0, max_memory: Any = None,
            device: str | None = None, progress: Progress | None = None, checkpoint: Any = None,
            overwrite: bool = False, keep_others: bool = False, wait: bool = False) -> Result:
    """Spectra, transport, PAM structure and the static certificate of every interface of ``chain``.

    The parameters are :data:`~physgsa.runs.certify.CERTIFY_PARAMS` (docs/definitions.md gives
    each one's meaning and default) and :func:`physgsa.runs.certify.certify`'s run options
    (``progress``, ``checkpoint``, ``overwrite``, ``keep_others``, ``wait``). Nothing is written
    unless ``checkpoint`` names a directory for the resumable records; :func:`save` writes the
    result and its report.
    """
    from .runs import certify as run  # start-up: pandas and scipy load when a run starts

    return run.certify(chain, q=q, chart=chart, groups=groups, n_groups=n_groups, units=units, threshold=threshold,
                       eta=eta, kappa_fraction=kappa_fraction, hub_degree=hub_degree,
                       support_quantile=support_quantile, outlier_factor=outlier_factor, full_support=full_support,
                       identical_supports=identical_supports, outlier_columns=outlier_columns,
                       outlier_energy=outlier_energy, pair_radius=pair_radius, safety=safety, tau_e=tau_e,
                       tau_rho=tau_rho, window_band=window_band, gap_floor=gap_floor,
                       n_perturbations=n_perturbations, perturbation=perturbation, below=below, above=above,
                       window_search=window_search, route=route, seed=seed, workers=workers, scheduler=scheduler,
                       dask_local=dask_local, max_memory=max_memory, device=device, progress=progress,
                       checkpoint=checkpoint, overwrite=overwrite, keep_others=keep_others, wait=wait)


@_named_errors
def spectra(source: Any = "minilm", *, q: float = 0.9, chart: str = "top", window_band: float | None = None,
            gap_floor: float = 1e-3, max_memory: Any = None, exclude: Sequence[str] = (),
            progress: Progress | None = None) -> SpectraResult:
    """Part I quantities and WeightWatcher's metrics of every weight of ``source``.

    ``source`` is a model (bundled name, folder, file with config.json, hub id in the local
    cache, nn.Module), a state dict or tensor file without config (``.safetensors``, ``.pt``,
    ``.pth``, ``.bin``, ``.npz``: every tensor read by its shape), or ``example``. The
    parameters are :data:`~physgsa.runs.spectra.SPECTRA_PARAMS`.
    """
    from .runs.spectra import spectra_source  # start-up: pandas and the power-law fits load when it runs

    return spectra_source(source, q=q, chart=chart, window_band=window_band, gap_floor=gap_floor,
                          max_memory=max_memory, exclude=exclude, progress=progress)


@_named_errors
def compare(base: Any, others: Sequence[Any] = (), *, quantize: str | None = None, group_size: int | None = None,
            granularity: str | None = None, prune: str | None = None, noise: float | None = None, q: float = 0.9,
            chart: str = "top", groups: str = "auto", n_groups: int = 8, units: str = "channels",
            threshold: str = "gap", eta: float = 0.5, kappa_fraction: float = 0.05, hub_degree: int = 3,
            support_quantile: float = 0.8, outlier_factor: float = 10.0, pair_radius: str = "l2",
            safety: float = 0.9, tau_e: float = 0.5, tau_rho: float = 0.5, window_band: float | None = None,
            gap_floor: float = 1e-3, seed: int = 0, max_memory: Any = None) -> CompareResult:
    """Certified drift of ``others`` (or of ``base`` quantized, pruned or noised) against ``base``.

    The structure parameters are :data:`~physgsa.runs.compare.COMPARE_PARAMS`; give other
    models of the same layout, or one simulated change (``quantize=`` with ``group_size=`` or
    ``granularity=``, ``prune="magnitude:0.5"``, ``noise=0.01``). See
    :func:`physgsa.runs.compare.compare_models`.
    """
    from .runs.compare import compare_models  # start-up: pandas and scipy load when a run starts

    return compare_models(base, others, quantize=quantize, group_size=group_size, granularity=granularity,
                          prune=prune, noise=noise, q=q, chart=chart, groups=groups, n_groups=n_groups, units=units,
                          threshold=threshold, eta=eta, kappa_fraction=kappa_fraction, hub_degree=hub_degree,
                          support_quantile=support_quantile, outlier_factor=outlier_factor, pair_radius=pair_radius,
                          safety=safety, tau_e=tau_e, tau_rho=tau_rho, window_band=window_band,
                          gap_floor=gap_floor, seed=seed, max_memory=max_memory)


@_named_errors
def plan(model: Any, *, bits: Any, formats: Any = "int4,int8", inputs: str | None = None, n_inputs: int = 4,
         seed: int = 0, per: str = "matrix", apply: bool = False) -> PlanResult:
    """One format per block of ``model`` within ``bits`` bits per weight, least summed predicted damage.

    The parameters are :data:`~physgsa.runs.plan.PLAN_PARAMS`; see
    :func:`physgsa.runs.plan.plan_model`. ``physgsa.save(result, DIR)`` writes ``plan.json``,
    ``plan.html`` and, with ``apply=True``, ``checkpoint/``.
    """
    from .runs.plan import plan_model  # start-up: pandas and torch load when a run starts

    return plan_model(model, bits=bits, formats=formats, inputs=inputs, n_inputs=n_inputs, seed=seed, per=per,
                      apply=apply)


def load_result(directory: Any) -> Result:
    """A certify output directory read back (no recomputation)."""
    from .outputs.result import load_result as load  # start-up: pandas loads when a result is read

    return load(directory)


@_named_errors
def study(items: Sequence[Any], out: Any, *, random_control: bool = False, seed: int = 0,
          keep_others: bool = False, progress: Progress | None = None,
          say: Callable[[str], None] | None = None) -> StudyResult:
    """Certify (or read back) every item and write the study into ``out``: compute, save, render.

    The parameters are :func:`physgsa.runs.study.study`'s; ``out`` stays locked from the first
    certificate to the page. Returns the :class:`~physgsa.outputs.study.StudyResult`.
    """
    # Here, not at the top: the lock loads numpy, and the study pandas and the models.
    from .outputs.directory import OutputLock
    from .runs.study import study as run_study

    with OutputLock(out, what="study") as lock:
        result = run_study(items, out, random_control=random_control, seed=seed, keep_others=keep_others,
                           progress=progress, say=say, lock=lock)
        save(result, out, keep_others=keep_others, lock=lock)
    return result


@_named_errors
def save(result: Any, out: Any, *, keep_others: bool = False, lock: Any = None) -> Path:
    """Save ``result`` into ``out`` and draw its pages: compute, then save, then render.

    Every entry point (the command line, the notebook) ends here, so a result type never needs
    to know about the report. The report's page writer (:func:`physgsa.report.draw`) is handed
    to ``result.save`` so that the pages and figures are staged together with the data and
    renamed into place with it, the result's completion marker (``certificate.json``) last: a
    save that fails midway (a full disk, a file-size limit) leaves neither a certificate without
    its report nor the records' loss. :func:`physgsa.report.write` redraws the pages alone.

    Parameters
    ----------
    result : Result, SpectraResult, CompareResult
        What a run returned.
    out : path
        The output directory (created if missing).
    keep_others : bool
        Write beside files physgsa did not write instead of refusing.
    lock : physgsa.outputs.directory.OutputLock, optional
        The lock the caller holds on ``out`` (the command line holds it for the whole run);
        without it ``out`` is locked for the save.

    Returns
    -------
    Path
        ``out``.
    """
    from . import report  # here, not at the top: the report loads pandas and jinja2, which `physgsa --help` never needs

    return result.save(out, keep_others=keep_others, lock=lock, pages=partial(report.draw, result))

"""The ``physgsa`` command line.

Exit codes: 0 ran; 2 bad input (a file, an array, an option value, an output directory in use
or holding other files: one line on stderr that names it, and nothing written); 3 internal
error (a proven bound failed: a bug in physgsa, please report it); 4 the environment failed
mid-run (disk full, file-size limit, a worker killed, every Dask worker lost: the run resumes
when rerun); 130 interrupted (the run resumes when rerun).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from .checkpoint import RUN_DIR

from ._validation import CertificateBugError, EnvironmentFailure, PhysgsaError

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 0, 2, 3, 4, 130

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="physgsa: per-layer spectra, interface transport, the Physical Alignment Matrix and its certificate.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _Progress:
    """Progress on stderr: a live bar on a terminal, plain lines otherwise, nothing with --quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._task = {}

    def __enter__(self):
        if not self.quiet and self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[item]}"), transient=True)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int, name: str) -> None:
        if self.quiet:
            return
        if self._bar is None or stage == "resume":
            typer.echo(f"physgsa: {stage} {done}/{total} {name}", err=True)
            return
        if stage not in self._task:
            self._task[stage] = self._bar.add_task(stage, total=total, item="")
        self._bar.update(self._task[stage], completed=done, item=name)


def _fail(message: str, code: int) -> None:
    typer.echo(f"physgsa: error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors():
    """Bad input -> one line, exit 2; a failed bound or any other failure -> one line, exit 3."""
    try:
        yield
    except PhysgsaError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except EnvironmentFailure as exc:
        _fail(str(exc), EXIT_ENVIRONMENT)
    except CertificateBugError as exc:
        _fail(f"internal error: {exc}", EXIT_INTERNAL)
    except Exception as exc:  # noqa: BLE001 - an unexpected failure is an internal error, reported in one line
        if os.environ.get("PHYSGSA_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set PHYSGSA_DEBUG=1 for the traceback; "
              "please report it)", EXIT_INTERNAL)


@contextlib.contextmanager
def _interrupted(out: Path):
    """Ctrl-C (or SIGTERM) mid-run: one line that says the run resumes, exit 130."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(f"physgsa: interrupted; finished work is kept in {out}/{RUN_DIR}: rerun the same command to "
                   "resume", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _load_groups(groups: str):
    """``--groups FILE.npz``: user-given row groups, one integer array per interface name
    (``left->right``) or right-hand factor name."""

    import numpy as np

    from ._validation import ChainFileError

    if not groups.endswith(".npz"):
        return groups
    path = Path(groups)
    if not path.is_file():
        raise ChainFileError(f"Groups file '{path}' does not exist. Check the path.")
    from .io import _ZIP_ERRORS
    from .resources import check_archive

    check_archive(path, f"Groups file '{path}'", error=ChainFileError)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except _ZIP_ERRORS + (ValueError,) as exc:
        raise ChainFileError(f"Groups file '{path}' is not a readable .npz of integer arrays ({exc}).") from None


def _load_chain(chain: str, order: Optional[str], **model_params):
    from ._validation import InvalidParameterError
    from .api import chain_from

    freq = model_params.pop("freq", "0,0,8")
    try:
        model_params["freq"] = tuple(int(v) for v in freq.split(","))
    except ValueError:
        raise InvalidParameterError(f"--freq must be three integers u,v,n; got {freq!r}.") from None
    if len(model_params["freq"]) != 3 or model_params["freq"][2] < 1:
        raise InvalidParameterError(f"--freq must be three integers u,v,n with n >= 1; got {freq!r}.")
    return chain_from(chain, order=order.split(",") if order else None, **model_params)


@app.command()
def certify(
    chain: str = typer.Argument("minilm", help="A model (bundled name, folder, .safetensors/.pt/.bin with config.json, "
                                "hub id in the local cache), an .npz/.safetensors of 2-D arrays, or 'example'."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (created; replaced if it holds physgsa results)."),
    order: Optional[str] = typer.Option(None, help="Factor order as comma-separated array names (default: the file's key order)."),
    q: float = typer.Option(0.9, help="Energy quantile of the effective rank k_q, in (0, 1)."),
    chart: str = typer.Option("top", help="Chart for s_hat: top, mle or window."),
    groups: str = typer.Option("auto", help="Row groups: auto (heads where rows have heads, else kmeans), kmeans, modes, heads, or an .npz of integer arrays keyed by interface ('a->b') or right factor name."),
    n_groups: int = typer.Option(8, help="Number of k-means groups."),
    units: str = typer.Option("channels", help="Column units: channels, heads, or groups (conv groups)."),
    threshold: str = typer.Option("gap", help="Support thresholds: gap (the spec: midpoint of the largest drop), gap_zero (ours: a final drop to zero appended) or relative (eta * max)."),
    safety: float = typer.Option(0.9, help="A priori safety factor in (0, 1]."),
    n_perturbations: int = typer.Option(32, help="Random draws per perturbation level."),
    perturbation: str = typer.Option("blocks", help="Perturbation draws: blocks (exact energy sampling) or explicit (form each E)."),
    window_search: bool = typer.Option(False, "--window-search", help="Search the smallest certified windows."),
    seed: int = typer.Option(0, help="Seed of every random choice."),
    factor: str = typer.Option("full", help="Model factors: full (I + R) or branch (R)."),
    interfaces: str = typer.Option("blocks", help="Model interfaces: blocks, or heads (W_O^l -> W_V^{l+1})."),
    mode: str = typer.Option("static", help="Model factors from weights (static) or Jacobians at inputs (jacobian)."),
    inputs: Optional[str] = typer.Option(None, help="Jacobian inputs: a text file (one sentence a line), an .npy of "
                                         "images, or 'random' (flagged). Default: bundled sentences / digits images."),
    tokens: str = typer.Option("uniform", help="Jacobian token reduction (transformers): uniform (the sum of the "
                               "blocks J_ts over all token pairs / T: keeps attention's token mixing) or diagonal "
                               "(the mean of the blocks J_tt)."),
    conv: str = typer.Option("dc", help="CNN channel matrices: dc (zero frequency) or fft (at --freq)."),
    freq: str = typer.Option("0,0,8", help="u,v,n: the Fourier mode of --conv fft on the n x n torus at the chain's input (n divisible by every stride)."),
    as_json: bool = typer.Option(False, "--json", help="Print the model-level verdict as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no summary line (errors still show)."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Refuse any decomposition or product whose "
                                             "estimated memory exceeds this (bytes, or 512M, 8G; default: 80% of "
                                             "the memory available at the start)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results or discard an interrupted run of "
                                   "different input or parameters in --out (otherwise refused)."),
    keep_others: bool = typer.Option(False, "--keep-others", help="Write into an --out that holds files physgsa did "
                                     "not write, leaving them untouched (otherwise refused, naming them)."),
    wait: bool = typer.Option(False, "--wait", help="If another physgsa run is writing into --out, wait for it to "
                              "finish instead of refusing."),
    workers: int = typer.Option(1, help="Local processes for factors and interfaces; results are identical."),
    scheduler: Optional[str] = typer.Option(None, help="Run the tasks on the Dask scheduler at this address."),
    dask_local: int = typer.Option(0, help="Start a Dask LocalCluster of this many workers for the run."),
    device: Optional[str] = typer.Option(None, help="Run decompositions and products through torch on this device "
                                         "(cpu, cuda, cuda:N); default: LAPACK."),
) -> None:
    """Certify a chain and write factors/interfaces/rows.parquet and certificate.json.

    Examples:

      physgsa certify --out out/                      (the bundled MiniLM)

      physgsa certify gpt2-folder/ --interfaces heads --units heads --out out/

      physgsa certify chain.npz --order a,b,c --q 0.95 --groups modes --out out/
    """
    from .pipeline import certify as run_certify

    from .checkpoint import OutputLock

    with _interrupted(out), _errors(), OutputLock(out, wait=wait, what="certify"):
        # Held from before the input is read until the outputs are in place: nobody else writes
        # here meanwhile (certify's records and the save share this lock).
        ch = _load_chain(chain, order, factor=factor, interfaces=interfaces, mode=mode, inputs=inputs, conv=conv,
                         freq=freq, seed=seed, tokens=tokens)
        with _Progress(quiet) as progress:
            result = run_certify(ch, progress=progress, q=q, chart=chart, groups=_load_groups(groups),
                                 n_groups=n_groups, units=units, threshold=threshold, safety=safety,
                                 n_perturbations=n_perturbations,
                                 perturbation=perturbation, window_search=window_search, seed=seed,
                                 workers=workers, scheduler=scheduler, dask_local=dask_local, device=device,
                                 checkpoint=out, overwrite=overwrite, keep_others=keep_others, wait=wait,
                                 max_memory=max_memory)
        result.save(out, keep_others=keep_others)
    v = result.verdict
    if as_json:
        typer.echo(json.dumps(v, sort_keys=True))
    elif not quiet:
        n, b = v["n_interfaces"], v["n_chain_breaks"]
        t = v.get("n_no_channel_structure", 0)
        trivial = f", {t} without channel structure" if t else ""
        typer.echo(f"{v['summary']} ({n} interface{'s' * (n != 1)}, {b} chain break{'s' * (b != 1)}{trivial}); "
                   f"wrote {out}/")


@app.command()
def spectra(
    model: str = typer.Argument("minilm", help="A model (as for certify) or an .npz/.safetensors of 2-D arrays."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for spectra.parquet and spectra.json."),
    q: float = typer.Option(0.9, help="Energy quantile of the effective rank k_q, in (0, 1)."),
    chart: str = typer.Option("top", help="Chart for s_hat: top, mle or window."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Refuse any matrix whose estimated memory "
                                             "exceeds this (bytes, or 512M, 8G; default: 80% of the available)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Leave out tensors whose key or name matches this "
                                      "glob pattern (repeatable), e.g. 'h.*.attn.c_attn.weight'."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary as JSON on stdout."),
) -> None:
    """Per-matrix spectra of every weight matrix as stored: the fast pass.

    Part I quantities (rho, s_top, s_mle, s_window, k_q, window, tails) and WeightWatcher's
    metrics (log_norm, log_spectral_norm, stable_rank, matrix_rank, entropy, alpha), one
    singular value decomposition each. Every tensor not analysed is listed with the reason.

    Examples:

      physgsa spectra --out out/              (the bundled MiniLM)

      physgsa spectra gpt2-folder/ --out out/
    """
    from .api import spectra as run_spectra

    with _errors():
        res = run_spectra(model, q=q, chart=chart, exclude=tuple(exclude), max_memory=max_memory)
        res.save(out)
    summary = {"n_matrices": len(res.table), "n_skipped": len(res.skipped), "source": res.record["source"]}
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
    else:
        typer.echo(f"{summary['n_matrices']} matrices analysed, {summary['n_skipped']} tensors skipped "
                   f"(listed in spectra.json); wrote {out}/")


@app.command()
def report(
    directory: Path = typer.Argument(..., help="An output directory of physgsa certify."),
) -> None:
    """Re-render DIR/report.html from the saved results, without recomputing.

    Example:

      physgsa report out/
    """
    from .report import rerender

    with _errors():
        path = rerender(directory)
    typer.echo(f"wrote {path}")


@app.command()
def models() -> None:
    """List the bundled names and the supported architectures."""
    from .adapters import ARCHITECTURES, BUNDLED_MODELS

    typer.echo("Bundled names:")
    typer.echo("  example        a seeded synthetic chain (no torch needed)")
    for name, text in BUNDLED_MODELS.items():
        if name == "digits-resnet":
            from .adapters.digits import cached_accuracy

            acc = cached_accuracy()
            text += (f"; test accuracy {acc[0]}/{acc[1]} ({100 * acc[0] / acc[1]:.2f}%) as trained on this machine"
                     if acc else "; not trained here yet")
        typer.echo(f"  {name:<14} {text}")
    typer.echo("Architectures (read from config.json):")
    for name, text in ARCHITECTURES.items():
        typer.echo(f"  {name:<14} {text}")


from .compare_cli import register as _register_compare  # noqa: E402 - the compare command lives in its own module

_register_compare(app, _errors, _fail)


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("physgsa: interrupted; no output was written", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()

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
from typer.core import TyperGroup

from .core.validation import CertificateBugError, EnvironmentFailure, PhysgsaError

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import exceptions as _click_errors

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 0, 2, 3, 4, 130

#: What people type after a switch that takes no value (``--window-search true``).
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0", "y", "n", "t", "f"}


def _command_args(ctx) -> list[str]:
    """The words after the command name, as the group received them."""
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:  # pragma: no cover - click before 8.2
        protected = getattr(ctx, "protected_args", [])
    return list(protected) + list(ctx.args)


def _usage_message(exc, args: list[str]) -> str:
    """A usage error in one line: what was wrong, and where the help is."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else \
        "physgsa" + (f" {args[0]}" if args and not args[0].startswith("-") else "")
    command = ctx.command if ctx is not None else None
    if isinstance(exc, _click_errors.NoSuchOption) and exc.option_name == "-q":
        return ("-q is not an option: the quantile is --q (for example --q 0.95), and --quiet silences progress "
                f"(see '{where} --help').")
    flags = {o for p in getattr(command, "params", []) if getattr(p, "is_flag", False) for o in p.opts}
    for i, word in enumerate(args[:-1]):
        if word in flags and args[i + 1].lower() in _BOOL_WORDS and "argument" in exc.format_message():
            return (f"{word} is a switch and takes no value: write {word} alone to turn it on, or leave it out "
                    f"(got '{word} {args[i + 1]}').")
    message = " ".join(exc.format_message().split())
    param = getattr(exc, "param", None)
    if isinstance(exc, _click_errors.BadParameter) and param is not None:
        for i, word in enumerate(args):
            for opt in getattr(param, "opts", ()):
                if word == opt and i + 1 < len(args):
                    message = message.rstrip(".") + f" (got {args[i + 1]!r})"
                elif word.startswith(opt + "="):
                    message = message.rstrip(".") + f" (got {word[len(opt) + 1:]!r})"
    return f"{message.rstrip('.')}; see '{where} --help'."


def _usage_fail(exc, args: list[str]) -> None:
    typer.echo(f"physgsa: error: {_usage_message(exc, args)}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


class _Group(TyperGroup):
    """Every usage error (an unknown option or command, a bad or missing value) is one line on
    stderr, ``physgsa: error: ...``, and exit 2, like every other bad input; never a framed box."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except _click_errors.UsageError as exc:
            if isinstance(exc, getattr(_click_errors, "NoArgsIsHelpError", ())):
                raise  # plain "physgsa": the help, as asked for
            _usage_fail(exc, list(args))

    def invoke(self, ctx):
        args = _command_args(ctx)
        try:
            return super().invoke(ctx)
        except _click_errors.UsageError as exc:
            if isinstance(exc, getattr(_click_errors, "NoArgsIsHelpError", ())):
                raise
            _usage_fail(exc, args)


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    # Plain help: switches show no value (no "<bool>"), and nothing is drawn in boxes.
    rich_markup_mode=None,
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
            count = f"{done}/{total}" if total is not None else f"{done}"
            typer.echo(f"physgsa: {stage} {count} {name}", err=True)
            return
        if stage not in self._task:
            self._task[stage] = self._bar.add_task(stage, total=total, item="")
        self._bar.update(self._task[stage], completed=done, item=name, total=total)


@contextlib.contextmanager
def _library_output(quiet: bool):
    """With --quiet, the libraries' own progress bars stay silent too (transformers' "Loading
    weights", huggingface_hub's); they are switched back on afterwards if they were on."""
    if not quiet:
        yield
        return
    hub_was_off = None
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        hub_was_off = are_progress_bars_disabled()
        disable_progress_bars()  # transformers reads this when it is first imported
    except ImportError:  # the core needs no huggingface_hub
        pass
    had_transformers = "transformers" in sys.modules
    bars_were_on = True
    if had_transformers:
        from transformers.utils import logging as tlog

        bars_were_on = tlog.is_progress_bar_enabled()
        tlog.disable_progress_bar()
    try:
        yield
    finally:
        if "transformers" in sys.modules and bars_were_on and hub_was_off is False:
            from transformers.utils import logging as tlog

            tlog.enable_progress_bar()
        elif hub_was_off is False:
            enable_progress_bars()


def _announce(model: str, quiet: bool) -> bool:
    """Say so before a bundled model is trained at first use (it takes seconds); True if announced."""
    from .models.bundled.trained import TRAINED_MODELS, ensure_trained

    if model in TRAINED_MODELS:
        # Trains at first use, announced (start, 25/50/75%, quality); silent with --quiet.
        ensure_trained(model, progress=None if quiet else (lambda line: typer.echo(line, err=True)))
        return False
    if quiet or model != "digits-resnet":
        return False
    from .models.bundled.digits import cache_path

    path = cache_path()
    if path.is_file():
        return False
    typer.echo(f"physgsa: training digits-resnet on scikit-learn's digits (first use only: about 10 to 15 s on one "
               f"thread; then cached in {path})", err=True)
    return True


def _announce_done(announced: bool) -> None:
    if announced:
        from .models.bundled.digits import cached_accuracy

        acc = cached_accuracy()
        if acc:
            typer.echo(f"physgsa: digits-resnet trained: {acc[0]} of {acc[1]} held-out digits correct", err=True)


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
        from .runs.records import RUN_DIR  # here, not at the top: it imports numpy, which --help never needs

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

    from .core.validation import ChainFileError

    if not groups.endswith(".npz"):
        return groups
    path = Path(groups)
    if not path.is_file():
        raise ChainFileError(f"Groups file '{path}' does not exist. Check the path.")
    from .models.files import _ZIP_ERRORS, not_an_archive
    from .core.resources import check_archive

    why = not_an_archive(path)
    if why is not None:
        raise ChainFileError(f"Groups file '{path}' is not a readable .npz archive: {why}. Save the integer arrays with "
                             "numpy.savez.")
    check_archive(path, f"Groups file '{path}'", error=ChainFileError)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except _ZIP_ERRORS + (ValueError,) as exc:
        raise ChainFileError(f"Groups file '{path}' is not a readable .npz of integer arrays ({exc}).") from None


def _load_chain(chain: str, order: Optional[str], **model_params):
    from .core.validation import InvalidParameterError
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
    chain: Optional[str] = typer.Argument(None, help="A model (bundled name, folder, .safetensors/.pt/.bin with "
                                          "config.json, hub id in the local cache), an .npz/.safetensors of 2-D "
                                          "arrays, or 'example'. Default: minilm (with --build: the checkpoint whose "
                                          "weights are loaded into the built module, if given)."),
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
    build: Optional[str] = typer.Option(None, "--build", help="Make the model by calling FUNC() from FILE.py (or "
                                        "package.module:FUNC). This RUNS that file's code; checkpoints never run "
                                        "code. A MODEL given too is a checkpoint whose weights are loaded into the "
                                        "module. Needs --sample-shape."),
    sample_shape: Optional[str] = typer.Option(None, "--sample-shape", help="N,C,H,W: find the residual blocks by "
                                               "running the model on a seeded standard normal batch of this shape "
                                               "(--seed). Static factors freeze squeeze-excitation gates at it; "
                                               "--mode jacobian differentiates at it (or at --inputs)."),
    window_search: bool = typer.Option(False, "--window-search", help="Also search, along q from 0.5 to 0.999, the "
                                       "smallest windows for which the direct check and the measured verdict hold "
                                       "(shown in the report)."),
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
    quiet: bool = typer.Option(False, "--quiet", help="No progress and no summary line (errors still show)."),
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
    from .runs.certify import certify as run_certify

    from .runs.records import OutputLock

    with _interrupted(out), _errors(), OutputLock(out, wait=wait, what="certify"), _library_output(quiet):
        # Held from before the input is read until the outputs are in place: nobody else writes
        # here meanwhile (certify's records and the save share this lock).
        if chain is None and build is None:
            chain = "minilm"
        announced = _announce(chain, quiet)
        walker = {"build": build, "sample_shape": sample_shape, "caller": "cli"} if (build or sample_shape) else {}
        ch = _load_chain(chain, order, factor=factor, interfaces=interfaces, mode=mode, inputs=inputs, conv=conv,
                         freq=freq, seed=seed, tokens=tokens, **walker)
        _announce_done(announced)
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
    model: Optional[str] = typer.Argument(None, help="A model (as for certify), a tensor file, or an .npz of 2-D "
                                          "arrays. Default: minilm (with --build: a checkpoint to load into the module)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for spectra.parquet, spectra.json and "
                             "spectra.html (created)."),
    q: float = typer.Option(0.9, help="Energy quantile of the effective rank k_q, in (0, 1)."),
    chart: str = typer.Option("top", help="Chart for s_hat: top, mle or window."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Refuse any matrix whose estimated memory "
                                             "exceeds this (bytes, or 512M, 8G; default: 80% of the available)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Leave out tensors whose key or name matches this "
                                      "glob pattern (repeatable), e.g. 'h.*.attn.c_attn.weight'."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress and no summary line (errors still show)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the spectra of another run (other input or "
                                   "parameters) in --out (otherwise refused)."),
    build: Optional[str] = typer.Option(None, "--build", help="Analyse the weights of the module FUNC() returns "
                                        "(FILE.py:FUNC or package.module:FUNC). This runs that file's code. With a "
                                        "MODEL checkpoint, its weights are loaded into the module first."),
) -> None:
    """Per-matrix spectra of every weight matrix as stored: the fast pass.

    Part I quantities (rho, s_top, s_mle, s_window, k_q, window, tails) and WeightWatcher's
    metrics (log_norm, log_spectral_norm, stable_rank, matrix_rank, entropy, alpha), one
    singular value decomposition each, in depth order (h.2 before h.10). Every tensor not
    analysed is listed with the reason.

    Examples:

      physgsa spectra --out out/              (the bundled MiniLM)

      physgsa spectra gpt2-folder/ --out out/
    """
    from .runs.spectra_run import run

    with _errors(), _library_output(quiet):
        if build is not None:
            from .models.generic import build_module

            model = build_module(build, caller="cli", weights=model)
        elif model is None:
            model = "minilm"
        announced = _announce(model, quiet) if isinstance(model, str) else False
        if not quiet:
            typer.echo(f"physgsa: spectra of every weight matrix of {model}, one at a time", err=True)
        with _Progress(quiet) as progress:
            res = run(model, out, overwrite=overwrite, progress=progress, q=q, chart=chart, exclude=tuple(exclude),
                      max_memory=max_memory)
        _announce_done(announced)
        res.save(out)
    summary = {"n_matrices": len(res.table), "n_skipped": len(res.skipped), "source": res.record["source"]}
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
    elif not quiet:
        typer.echo(f"{summary['n_matrices']} matrices analysed, {summary['n_skipped']} tensors skipped "
                   f"(listed in spectra.json); wrote {out}/")


@app.command()
def report(
    directory: Path = typer.Argument(..., help="An output directory of physgsa certify."),
) -> None:
    """Re-render DIR/report.html and DIR/figures/ from the saved results, without recomputing.

    Example:

      physgsa report out/
    """
    from .report.pages import rerender

    with _errors():
        path = rerender(directory)
    typer.echo(f"wrote {path}")


@app.command()
def models() -> None:
    """List the bundled names and the supported architectures."""
    from .models import ARCHITECTURES, BUNDLED_MODELS

    typer.echo("Bundled names:")
    typer.echo("  example          a seeded synthetic chain (no torch needed)")
    for name, text in BUNDLED_MODELS.items():
        if name == "digits-resnet":
            from .models.bundled.digits import cached_accuracy

            acc = cached_accuracy()
            text += ("; CNN; data: scikit-learn's digits; "
                     + (f"test accuracy {acc[0]}/{acc[1]} ({100 * acc[0] / acc[1]:.2f}%) as trained on this machine"
                        if acc else "not trained here yet"))
        elif name in ("digits-vit", "digits-diffusion", "pysource-gpt"):
            from .models.bundled.trained import model_info

            info = model_info(name)
            text += f"; {info['family']}; data: {info['data']}; {info['quality_text']}"
        elif name == "minilm":
            text += "; language model; data: sentence pairs (sentence-transformers); no quality recorded here"
        typer.echo(f"  {name:<16} {text}")
    typer.echo("Architectures (read from config.json):")
    for name, text in ARCHITECTURES.items():
        typer.echo(f"  {name:<16} {text}")


from .compare_cli import register as _register_compare  # noqa: E402 - the compare command lives in its own module
from .study_cli import register as _register_study  # noqa: E402 - the study command lives in its own module

_register_compare(app, _errors, _fail)
_register_study(app, _errors, _fail)


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("physgsa: interrupted; no output was written", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()

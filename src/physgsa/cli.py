"""The ``physgsa`` command line: every command, its options made from the parameter tables.

Exit codes: 0 ran; 2 bad input (a file, an array, an option value, an output directory in use
or holding other files: one line on stderr that names it, and nothing written); 3 internal
error (a proven bound failed: a bug in physgsa, please report it); 4 the environment failed
mid-run (disk full, file-size limit, a worker killed, every Dask worker lost: the run resumes
when rerun); 130 interrupted (the run resumes when rerun).

Each option's default, type and help text is written once, in the parameter table of the entry
point that takes it (:data:`physgsa.runs.certify.CERTIFY_PARAMS`, ``SPECTRA_PARAMS``,
``COMPARE_PARAMS``, :data:`physgsa.models.MODEL_PARAMS`), or in :data:`SWITCHES` for what only
the command line has (``--out``, ``--quiet``, ...). A command names its options in order
(:func:`_options`); they are made when the command is run or its help is shown, so that
``physgsa --help`` imports none of the modules that hold the tables. Every command runs inside
one context (:func:`_running`): its errors, interrupts, output lock, progress and ``--quiet``.

Start-up: ``physgsa --help`` must not import numpy, pandas or torch, so the modules that compute
(and the tables inside them) are imported inside the functions that need them, here and below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List, Mapping, Optional

import typer
from typer.core import TyperGroup

from .core.validation import (
    CertificateBugError,
    EnvironmentFailure,
    InvalidParameterError,
    Param,
    PhysgsaError,
    command_line,
)

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import exceptions as _click_errors

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 0, 2, 3, 4, 130

#: What people type after a switch that takes no value (``--window-search true``).
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0", "y", "n", "t", "f"}

_QUIET = "No progress and no summary line (errors still show)."
_KEEP_OTHERS = ("Write into an --out that holds files physgsa did not write, leaving them untouched (otherwise "
                "refused, naming them).")

#: The options only the command line has (no entry point takes them). A command that says
#: something else about one gives its own text beside it (:func:`_options`).
SWITCHES: Mapping[str, Param] = {
    "out": Param(..., "any", cli_type=Path, flags=("--out", "-o"),
                 help="Output directory (created if missing). physgsa's own files there are replaced by this "
                      "run's; the results of a run of other input or parameters are refused without --overwrite, "
                      "and files physgsa did not write without --keep-others (never touched)."),
    "order": Param(None, "any", allow_none=True,
                   help="Factor order as comma-separated array names (default: the file's key order)."),
    "json": Param(False, "bool", help="Print the model-level verdict as JSON on stdout."),
    "quiet": Param(False, "bool", help=_QUIET),
    "overwrite": Param(False, "bool", help="Replace results or discard an interrupted run of different input or "
                                           "parameters in --out (otherwise refused)."),
    "keep_others": Param(False, "bool", help=_KEEP_OTHERS),
    "wait": Param(False, "bool", help="If another physgsa run is writing into --out, wait for it to finish instead "
                                      "of refusing."),
    "build": Param(None, "any", allow_none=True,
                   help="Analyse the weights of the module FUNC() returns (FILE.py:FUNC or package.module:FUNC). "
                        "This runs that file's code. With a MODEL checkpoint, its weights are loaded into the module "
                        "first."),
    # compare's simulated change (read by physgsa.core.perturb.parse_change)
    "quantize": Param(None, "any", allow_none=True, help="Compare the base with itself quantized: int8, int4, int3, "
                                                         "fp8, bf16 or fp16 (symmetric round-to-nearest)."),
    "group_size": Param(None, "int", allow_none=True,
                        help="Quantize in groups of this many input entries per output channel."),
    "granularity": Param(None, "any", allow_none=True,
                         help="Quantization scale per tensor or per channel (default: channel)."),
    "prune": Param(None, "any", allow_none=True, help="Compare with the base pruned: magnitude:FRACTION."),
    "noise": Param(None, "float", allow_none=True,
                   help="Compare with the base plus Gaussian noise of this relative Frobenius size."),
    # study's (read by physgsa.runs.study.study)
    "random_control": Param(False, "bool", help="Also certify each model's architecture with seeded random weights, "
                                                "shown beside it."),
    "seed": Param(0, "int", help="Seed of the random weights of --random-control (0: for the networks physgsa "
                                 "trains, the weights their training started from)."),
}


def _option(name: str, param: Param) -> inspect.Parameter:
    """The typer option of one table entry: its flags, type, default and help text."""
    kind = param.cli_type or {"float": float, "int": int, "bool": bool}.get(param.kind, str)
    default = param.default
    if param.kind == "floats" and param.cli_type is None:
        default = ",".join(str(v) for v in default)  # (0, 0, 8) is typed 0,0,8
    elif isinstance(default, tuple):
        default = list(default)
    flags = param.flags or ("--" + name.replace("_", "-"),)
    annotation = Optional[kind] if default is None else kind
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *flags, help=param.help))


def _options(*names: str, tables: Callable[[], tuple] = tuple, **own: str) -> Callable:
    """Give a command the options ``names``, in this order, made from its parameter tables.

    ``tables()`` returns the command's tables (imported when called: see the module docstring);
    a name is looked up in each table, the first that gives it a help text, then in
    :data:`SWITCHES`. ``own`` gives this command's help text for an option where it says
    something else. The options are made by :meth:`_Group.resolve_command` when the command
    runs or shows its help; the command receives them as keyword arguments.
    """

    def attach(command: Callable) -> Callable:
        sig = inspect.signature(command, eval_str=True)
        # typer reads the positional arguments now; the options join them when they are made
        command.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values()
                                                        if p.kind != p.VAR_KEYWORD])
        command.physgsa_options = (names, tables, own)
        return command

    return attach


def _with_options(command: typer.core.TyperCommand) -> typer.core.TyperCommand:
    """``command`` with the options its :func:`_options` names (itself if it names none)."""
    spec = getattr(command.callback, "physgsa_options", None)
    if spec is None:
        return command
    names, tables, own = spec
    found = (*tables(), SWITCHES)
    options = []
    for name in names:
        param = next(t[name] for t in found if t.get(name) is not None and (t[name].help or t is SWITCHES))
        options.append(_option(name, dataclasses.replace(param, help=own[name]) if name in own else param))
    run = inspect.unwrap(command.callback)

    def with_options(**given: Any) -> Any:
        return run(**given)

    with_options.__doc__ = run.__doc__
    with_options.__signature__ = run.__signature__.replace(
        parameters=[*run.__signature__.parameters.values(), *options])
    one = typer.Typer(add_completion=False, rich_markup_mode=None)
    one.command(name=command.name, context_settings=command.context_settings)(with_options)
    return typer.main.get_command(one)


# -- usage errors: one line ------------------------------------------------------------------------

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
            return _switch_message(word, args[i + 1])
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
    _fail(_usage_message(exc, args), EXIT_BAD_INPUT)


def _switch_message(word: str, value: str) -> str:
    return (f"{word} is a switch and takes no value: write {word} alone to turn it on, or leave it out "
            f"(got '{word} {value}').")


def _refuse_switch_values(group, ctx, args: list[str]) -> None:
    """``--window-search 1``: a switch followed by a yes/no word, which click would take for the model."""
    try:
        _, command, rest = group.resolve_command(ctx, list(args))
    except _click_errors.UsageError:
        return  # reported as usual by the invocation
    flags = {o for p in getattr(command, "params", []) if getattr(p, "is_flag", False) for o in p.opts}
    for i, word in enumerate(rest[:-1]):
        if word == "--":
            return
        if word in flags and rest[i + 1].lower() in _BOOL_WORDS:
            _fail(_switch_message(word, rest[i + 1]), EXIT_BAD_INPUT)


class _Group(TyperGroup):
    """Every usage error (an unknown option or command, a bad or missing value) is one line on
    stderr, ``physgsa: error: ...``, and exit 2, like every other bad input; never a framed box.
    A command's options are made when it is resolved (:func:`_options`), never for the list.
    """

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except _click_errors.UsageError as exc:
            if isinstance(exc, getattr(_click_errors, "NoArgsIsHelpError", ())):
                raise  # plain "physgsa": the help, as asked for
            _usage_fail(exc, list(args))

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            command = _with_options(command)  # built per call: the app itself is never changed
        return name, command, rest

    def invoke(self, ctx):
        args = _command_args(ctx)
        if args:
            _refuse_switch_values(self, ctx, args)
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


def _show_version(value: bool) -> None:
    if value:
        from .core.version import __version__  # no numpy (start-up)

        typer.echo(f"physgsa {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                 help="Print the version and exit."),
) -> None:
    pass


# -- the one context every command runs in ---------------------------------------------------------

class _Progress:
    """Progress on stderr: a live bar on a terminal (from the first report on), plain lines
    otherwise, nothing with --quiet.
    """

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._task = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int, name: str) -> None:
        if self.quiet:
            return
        if self._bar is None and self.tty and stage != "resume":
            # rich only for a terminal, and only once there is something to show
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[item]}"), transient=True)
            self._bar.__enter__()
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
    weights", huggingface_hub's); they are switched back on afterwards if they were on.
    """
    if not quiet:
        yield
        return
    hub_was_off = None
    try:  # huggingface_hub and transformers only when asked to be quiet (start-up)
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


def _fail(message: str, code: int) -> None:
    typer.echo(f"physgsa: error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors():
    """Bad input -> one line, exit 2; a failed bound or any other failure -> one line, exit 3."""
    try:
        with command_line():  # every message names flags (--n-groups), not Python arguments
            yield
    except PhysgsaError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except EnvironmentFailure as exc:
        _fail(str(exc), EXIT_ENVIRONMENT)
    except CertificateBugError as exc:
        _fail(f"internal error: {exc}", EXIT_INTERNAL)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - an unexpected failure is an internal error, reported in one line
        if os.environ.get("PHYSGSA_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set PHYSGSA_DEBUG=1 for the traceback; "
              "please report it)", EXIT_INTERNAL)


@dataclasses.dataclass(frozen=True)
class _Running:
    """What a command gets from :func:`_running`."""

    progress: _Progress
    #: The output lock the command holds on ``--out``, handed down to the run and the save.
    lock: Any = None


@contextlib.contextmanager
def _running(out: Path, *, quiet: bool, lock: str | None = None, wait: bool = False,
             resumes: bool = False) -> Iterator[_Running]:
    """The one context of every command.

    - errors: one line on stderr and exit 2 (bad input), 3 (a bug) or 4 (the environment);
    - interrupts: Ctrl-C or SIGTERM, one line and exit 130; a run that keeps records
      (``resumes``: certify's) says that rerunning resumes it;
    - ``lock``: the output lock on ``out``, held (what its owner file names) from before the
      input is read until the outputs are in place, waiting for another run with ``wait``;
    - ``quiet``: no progress, and the libraries' own bars silenced;
    - progress on stderr, handed to the run.
    """
    from .outputs import interrupts  # no numpy: the handler is there from start-up

    try:
        with interrupts.running(out), _errors(), contextlib.ExitStack() as stack:
            held = None
            if lock is not None:
                from .outputs.directory import OutputLock  # numpy: never at start-up

                held = stack.enter_context(OutputLock(out, wait=wait, what=lock))
            stack.enter_context(_library_output(quiet))
            yield _Running(progress=stack.enter_context(_Progress(quiet)), lock=held)
    except KeyboardInterrupt:
        typer.echo(interrupts.interrupted_line(out, resumes), err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


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


def _freq(freq: str) -> tuple[int, ...]:
    """``--freq u,v,n`` as three integers."""
    try:
        value = tuple(int(v) for v in freq.split(","))
    except ValueError:
        raise InvalidParameterError(f"--freq must be three integers u,v,n; got {freq!r}.") from None
    if len(value) != 3 or value[2] < 1:
        raise InvalidParameterError(f"--freq must be three integers u,v,n with n >= 1; got {freq!r}.")
    return value


def _summary(message: str, *, quiet: bool) -> None:
    if not quiet:
        typer.echo(message)


# -- the commands ----------------------------------------------------------------------------------

def _certify_tables() -> tuple:
    from .models import MODEL_PARAMS  # the tables live with their entry points (start-up: see the top)
    from .runs.certify import CERTIFY_PARAMS

    return CERTIFY_PARAMS, MODEL_PARAMS


@app.command()
@_options("out", "order", "q", "chart", "groups", "n_groups", "units", "threshold", "support_quantile",
          "outlier_factor", "full_support", "identical_supports", "outlier_columns", "outlier_energy", "pair_radius",
          "window_band", "safety", "n_perturbations", "perturbation", "build", "sample_shape", "sample",
          "window_search", "route", "seed", "factor", "interfaces", "mode", "inputs",
          "tokens", "conv", "freq", "json", "quiet", "max_memory", "overwrite", "keep_others", "wait", "workers",
          "scheduler", "dask_local", "device", tables=_certify_tables)
def certify(
    chain: Optional[str] = typer.Argument(None, help="A model (bundled name, folder, .safetensors/.pt/.bin with "
                                          "config.json, hub id in the local cache), an .npz/.safetensors of 2-D "
                                          "arrays, or 'example'. Default: minilm (with --build: the checkpoint whose "
                                          "weights are loaded into the built module, if given)."),
    **p: Any,
) -> None:
    """Certify a chain and write factors/interfaces/rows/profile.parquet and certificate.json.

    Graded certificate (definitions section 5b): the a priori share is the share of A0's energy
    whose routing (which input channels each group of rows reads) is proven to survive the
    truncation from the windows alone; the measured share proves the same with the exact error of
    each block; the robustness profile (profile.parquet) gives, for every size of change, the
    share of channels, memberships, group pairs and hubs that provably cannot change.

    Examples:

      physgsa certify --out out/                      (the bundled MiniLM)

      physgsa certify gpt2-folder/ --interfaces heads --units heads --out out/

      physgsa certify chain.npz --order a,b,c --q 0.95 --groups modes --out out/
    """
    from .api import chain_from, save
    from .models.files import read_groups
    from .models.load import check_model_options
    from .runs.certify import CERTIFY_PARAMS
    from .runs.certify import certify as run_certify

    out, quiet = p["out"], p["quiet"]
    with _running(out, quiet=quiet, lock="certify", wait=p["wait"], resumes=True) as run:
        if chain is None and p["build"] is None:
            chain = "minilm"
        walker = ({k: p[k] for k in ("build", "sample_shape", "sample")}
                  if p["build"] or p["sample_shape"] or p["sample"] else {})
        model = {**{k: p[k] for k in ("factor", "interfaces", "mode", "inputs", "conv", "seed", "tokens")},
                 "caller": "cli", "order": p["order"].split(",") if p["order"] else None, "freq": _freq(p["freq"])}
        check_model_options(chain, **model, **walker)  # refusals first: before a bundled model is trained
        announced = _announce(chain, quiet)
        ch = chain_from(chain, **model, **walker)
        _announce_done(announced)
        params = {k: v for k, v in p.items() if k in CERTIFY_PARAMS}
        result = run_certify(ch, progress=run.progress, **{**params, "groups": read_groups(p["groups"])},
                             checkpoint=out, overwrite=p["overwrite"], keep_others=p["keep_others"], wait=p["wait"],
                             lock=run.lock)
        save(result, out, keep_others=p["keep_others"], lock=run.lock)
    v = result.verdict
    if p["json"]:
        typer.echo(json.dumps(v, sort_keys=True))
    n, b, t = v["n_interfaces"], v["n_chain_breaks"], v.get("n_no_channel_structure", 0)
    trivial = f", {t} without channel structure" if t else ""
    share = (v.get("graded") or {}).get("apriori")
    graded = "" if share is None else f"; {_percent(share)} of the routing certified a priori"
    _summary(f"{v['summary']} ({n} interface{'s' * (n != 1)}, {b} chain break{'s' * (b != 1)}{trivial}){graded}; "
             f"wrote {out}/",
             quiet=quiet or p["json"])


def _percent(x: float) -> str:
    """A share as a whole percent, never rounded up to 100% or down to 0% when it is not."""
    pct = 100.0 * x
    if 0 < pct < 1:
        return "<1%"
    if 99 < pct < 100:
        return ">99%"
    return f"{pct:.0f}%"


def _spectra_tables() -> tuple:
    from .runs.spectra import SPECTRA_PARAMS  # the table lives with its entry point (start-up: see the top)

    return (SPECTRA_PARAMS,)


@app.command()
@_options("out", "q", "chart", "max_memory", "exclude", "json", "quiet", "overwrite", "keep_others", "build",
          tables=_spectra_tables,
          out="Output directory for spectra.parquet, spectra.json and spectra.html (created).",
          json="Print a summary as JSON on stdout.",
          overwrite="Replace the spectra of another run (other input or parameters) in --out (otherwise refused).")
def spectra(
    model: Optional[str] = typer.Argument(None, help="A model (as for certify), a tensor file, or an .npz of 2-D "
                                          "arrays. Default: minilm (with --build: a checkpoint to load into the "
                                          "module)."),
    **p: Any,
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
    from .api import save
    from .runs.spectra_run import run as run_spectra

    out, quiet = p["out"], p["quiet"]
    with _running(out, quiet=quiet, lock="spectra") as run:
        if p["build"] is not None:
            from .models.generic import build_module  # torch: only with --build

            model = build_module(p["build"], caller="cli", weights=model)
        elif model is None:
            model = "minilm"
        announced = _announce(model, quiet) if isinstance(model, str) else False
        if not quiet:
            typer.echo(f"physgsa: spectra of every weight matrix of {model}, one at a time", err=True)
        res = run_spectra(model, out, overwrite=p["overwrite"], keep_others=p["keep_others"], progress=run.progress,
                          q=p["q"], chart=p["chart"], exclude=tuple(p["exclude"]), max_memory=p["max_memory"])
        _announce_done(announced)
        save(res, out, keep_others=p["keep_others"], lock=run.lock)
    summary = {"n_matrices": len(res.table), "n_skipped": len(res.skipped), "source": res.record["source"]}
    if p["json"]:
        typer.echo(json.dumps(summary, sort_keys=True))
    _summary(f"{summary['n_matrices']} matrices analysed, {summary['n_skipped']} tensors skipped "
             f"(listed in spectra.json); wrote {out}/", quiet=quiet or p["json"])


@app.command()
def report(
    directory: Path = typer.Argument(..., help="An output directory of physgsa certify."),
) -> None:
    """Re-render DIR/report.html and DIR/figures/ from the saved results, without recomputing.

    Example:

      physgsa report out/
    """
    from .report import rerender

    with _running(directory, quiet=False):
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


def _compare_tables() -> tuple:
    from .runs.compare import COMPARE_PARAMS  # the table lives with its entry point (start-up: see the top)

    return (COMPARE_PARAMS,)


@app.command()
@_options("out", "quantize", "group_size", "granularity", "prune", "noise", "q", "groups", "threshold",
          "support_quantile", "outlier_factor", "pair_radius", "seed",
          "overwrite", "keep_others", "quiet", tables=_compare_tables,
          out="Output directory for compare.parquet, compare_factors.parquet, compare.json and compare.html "
              "(created; the comparison of another input or other parameters there is refused without "
              "--overwrite).",
          overwrite="Replace the comparison of another input or other parameters in --out (otherwise refused).",
          keep_others="Write beside files physgsa did not write.", quiet="No summary line.")
def compare(
    base: str = typer.Argument(..., help="The base model or chain (anything certify accepts)."),
    others: Optional[List[str]] = typer.Argument(None, help="Models of the same layout, in order (e.g. the "
                                                           "checkpoints of a training run)."),
    **p: Any,
) -> None:
    """Is the other model's channel structure certified the same as the base's?

    Examples:

      physgsa compare minilm --quantize int4 --group-size 128 --out cmp/

      physgsa compare digits-resnet --prune magnitude:0.5 --out cmp/

      physgsa compare epoch1.npz epoch2.npz epoch3.npz --out traj/
    """
    from .api import save
    from .outputs.compare import IDENTITY, check_out
    from .outputs.directory import refuse_foreign
    from .runs.compare import compare_models, comparison_identity

    out, quiet = p["out"], p["quiet"]
    with _running(out, quiet=quiet, lock="compare") as run:
        change = {k: p[k] for k in ("quantize", "group_size", "granularity", "prune", "noise")}
        params = {k: p[k] for k in ("q", "groups", "threshold", "support_quantile", "outlier_factor", "pair_radius",
                                    "seed")}
        # Refusals first: the user's files and another comparison in --out, from the arguments alone.
        refuse_foreign(Path(out), p["keep_others"])
        early = comparison_identity(others or [], change, params)
        if early is not None:  # else compare_models says what is missing (or too much)
            check_out(out, early, overwrite=p["overwrite"])
        announced = _announce(base, quiet)  # a bundled model trained at first use says so, and its result
        res = compare_models(base, others or (), **change, **params)
        _announce_done(announced)
        check_out(out, {k: res.document.get(k) for k in IDENTITY}, overwrite=p["overwrite"])
        save(res, out, keep_others=p["keep_others"], lock=run.lock)
    ifs = res.interfaces
    _summary(f"{int(ifs['certified'].sum())} of {len(ifs)} interfaces certified the same, "
             f"{int((~ifs['direct_same']).sum())} changed by the direct check; wrote {out}/", quiet=quiet)


@app.command()
@_options("out", "random_control", "seed", "keep_others", "json", "quiet",
          out="Output directory for study.html, study.parquet, figures/ and runs/ (each model's own certify output).",
          keep_others="Write into an --out that holds files physgsa did not write, leaving them untouched "
                      "(otherwise refused).",
          json="Print one line of JSON per model on stdout.")
def study(
    models: List[str] = typer.Argument(..., help="Models (anything certify accepts: bundled names, folders, "
                                       "files, hub ids in the local cache) and result directories written "
                                       "by certify (read back, never recomputed)."),
    **p: Any,
) -> None:
    """Compare several models on one page: verdicts, margins, profiles, shares and heatmaps.

    Each model is certified with the default parameters into OUT/runs/NAME/ (a rerun reads
    it back when the model and parameters are unchanged); a result directory of certify is
    read as it is. Writes OUT/study.parquet (one row per model-interface), OUT/study.html
    and every panel as OUT/figures/study-*.svg.

    Examples:

      physgsa study minilm digits-resnet digits-vit digits-diffusion pysource-gpt --random-control --out study/

      physgsa study out-a/ out-b/ --out study/
    """
    from .api import save
    from .runs.study import study as run_study

    out, quiet = p["out"], p["quiet"]

    def say(line: str) -> None:
        if not quiet:
            typer.echo(line, err=True)

    with _running(out, quiet=quiet, lock="study") as run:
        res = run_study(models, out, random_control=p["random_control"], seed=p["seed"], keep_others=p["keep_others"],
                        progress=run.progress, say=say, lock=run.lock)
        save(res, out, keep_others=p["keep_others"], lock=run.lock)
    if p["json"]:
        for e in res.entries:
            v = e.result.certificate.get("verdict", {})
            typer.echo(json.dumps({"model": e.label, "family": e.family, "architecture": e.architecture,
                                   "weights": e.weights, "n_interfaces": v.get("n_interfaces"),
                                   "n_members": v.get("n_members"),
                                   "n_no_channel_structure": v.get("n_no_channel_structure")}, sort_keys=True))
    n = len(res.entries)
    _summary(f"{n} model{'s' * (n != 1)}, {int(res.table['interface'].notna().sum())} interfaces; "
             f"wrote {out}/study.html", quiet=quiet or p["json"])


def _plan_tables() -> tuple:
    from .runs.plan import PLAN_PARAMS  # the table lives with its entry point (start-up: see the top)

    return (PLAN_PARAMS,)


@app.command()
@_options("bits", "formats", "out", "per", "apply", "inputs", "n_inputs", "seed", "keep_others", "quiet",
          tables=_plan_tables, out="Output directory for plan.json, plan.html and, with --apply, checkpoint/.",
          quiet="No summary line.")
def plan(
    model: str = typer.Argument(..., help="A bundled model (digits-resnet, digits-vit, pysource-gpt, minilm, digits-"
                                "diffusion) or a model folder with config.json (GPT-2, BERT, a diffusers UNet)."),
    **p: Any,
) -> None:
    """Choose a weight format per block within a bits budget, from the predicted damage S.

    S is the combined score of docs/validation.md: no labels (attention models use unlabeled
    inputs). Writes OUT/plan.json, OUT/plan.html, and with --apply OUT/checkpoint/.

    Example:

      physgsa plan pysource-gpt --bits 4.5 --formats int3,int4,int8 --apply --out plan/
    """
    from .api import save
    from .outputs.directory import refuse_foreign
    from .outputs.plan import CHECKPOINT_DIR
    from .runs.plan import plan_model

    out, quiet = p["out"], p["quiet"]
    with _running(out, quiet=quiet, lock="plan") as run:
        refuse_foreign(Path(out), p["keep_others"], folders=(CHECKPOINT_DIR,))  # before any work
        announced = _announce(model, quiet)
        res = plan_model(model, **{k: p[k] for k in ("bits", "formats", "inputs", "n_inputs", "seed", "per", "apply")})
        _announce_done(announced)
        save(res, out, keep_others=p["keep_others"], lock=run.lock)
    doc = res.document
    _summary(f"{len(doc['blocks'])} blocks at {doc['bits_per_weight_float']:.4g} bits per weight (budget "
             f"{doc['budget_bits_float']:g}); wrote {out}/plan.html", quiet=quiet)


def main() -> None:
    """Console entry point."""
    from .outputs import interrupts

    interrupts.install()  # Ctrl-C and SIGTERM: one line and exit 130, or the outputs and exit 0
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("physgsa: interrupted; no output was written", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()

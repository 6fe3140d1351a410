"""The Result of ``certify``: tables, the certificate document, and saving them together.

A Result is plain data, separate from the inputs: four DataFrames (``factors``,
``interfaces``, ``rows``, ``heads``), one JSON-ready dict (``certificate``), the binned arrays
the report draws (``heatmaps``) and the run's ``provenance``. :meth:`Result.save` writes
``factors.parquet``, ``interfaces.parquet``, ``rows.parquet``, ``heads.parquet``,
``certificate.json``, ``provenance.json`` and ``heatmaps.npz`` through the one staged write
(:func:`physgsa.outputs.directory.staged_write`), ``certificate.json`` last, so a failed run
never leaves a half-written result; :meth:`Result.load` (:func:`load_result`) reads them back.
The same input and parameters give the same bytes. The page and the figures are the report's
(:func:`physgsa.report.write`; :func:`physgsa.save` saves and draws in one step).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..core.chain import Chain, Factor
from ..core.spectra import Spectrum
from ..core.validation import OutputDirectoryError
from ..models.files import _ZIP_ERRORS, check_archive, dtype_name
from .directory import FIGURES_DIR, RUN_DIR, OutputLock, held, read_json, refuse_foreign, staged_write, write_npz
from .jsonio import jsonable, nullable, plain, versions

__all__ = ["Result", "build_result", "factor_record", "interface_record", "load_result", "OUTPUT_FILES",
           "RUN_OPTIONS", "OWN_FIGURE"]

OUTPUT_FILES = ("factors.parquet", "interfaces.parquet", "rows.parquet", "heads.parquet", "certificate.json",
                "heatmaps.npz")
#: Parameters that choose how a run executes, never what it computes: a run may resume with
#: other values, they are not part of the fingerprint, and certificate.json does not record them.
RUN_OPTIONS = ("workers", "scheduler", "dask_local", "max_memory")
#: The report's panels in ``DIR/figures/`` (anything else there is a user's and left alone).
OWN_FIGURE = re.compile(r"^(profiles-(exponents|rho|ranks|chart-residual|tail-energy|window-gap|graded-shares)"
                        r"|interface-\d+-(pam-truncated-A0|pam-full-A1|pam-difference-E|icm-labels|masks"
                        r"|block-energies|incidence-graph|window-search|profile))\.svg$")


def factor_record(factor: Factor, s: Spectrum) -> dict[str, Any]:
    """One factor's row of ``factors.parquet`` (plain JSON types)."""
    res = s.residuals
    record: dict[str, Any] = plain({
        "name": s.name, "rows": s.rows, "cols": s.cols, "r": s.r, "fro_norm": s.fro,
        "rho": s.rho, "s_top": s.s_top, "s_mle": s.s_mle, "s_window": s.s_window,
        "window_r2": s.window_r2, "chart": s.chart, "s_hat": s.s_hat,
        "hellinger": s.hellinger, "kl": s.kl,
        "hellinger_top": res["top"][0], "hellinger_mle": res["mle"][0],
        "hellinger_window": res["window"][0] if "window" in res else None,
        "fisher": s.fisher, "k_q": s.k_q, "k": s.k, "window_gap": s.window_gap,
        "tau": s.tau, "tau_gc": s.tau_gc, "tail_error": s.tail_error,
        "numerical_rank": s.numerical_rank, "source": factor.provenance.get("source", ""),
        "kind": factor.provenance.get("kind", ""), "source_dtype": dtype_name(factor.provenance.get("dtype", "")),
        # Jacobian factors: the token reduction and the share of the sublayer Jacobian's energy it keeps.
        "tokens": factor.provenance.get("tokens", ""), "energy_kept": factor.provenance.get("energy_kept"),
        "flags": ";".join(s.flags),
    })
    return record


def _factor_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    df: pd.DataFrame = pd.DataFrame(records)
    for col in ("s_window", "window_r2", "hellinger_window", "energy_kept"):
        df[col] = nullable(df[col].tolist())
    return df


def _interface_row(it: dict[str, Any]) -> dict[str, Any]:
    """One interface's row of ``interfaces.parquet``."""
    tr, rig, mg, ver, ref = it["transport"], it["rigidity"], it["margins"], it["verdicts"], it["reference"]
    st = ref.structure
    frac = it["decomposition"]["fraction"]
    return {
        "interface": it["name"], "index": it["index"], "left": it["left"], "right": it["right"],
        "k_left": tr.k_left, "k_right": tr.k_right, "slack": rig.slack, "amplitude": rig.amplitude,
        "drift": rig.drift, "drift_bound": rig.drift_bound, "drift_holds": rig.drift_holds,
        "trunc_error": tr.trunc_error, "trunc_bound": tr.trunc_bound, "eps_trunc": tr.eps_trunc,
        "eps_trunc_gc": tr.eps_trunc_gc, "tail_error_left": tr.tail_error_left,
        "tail_error_right": tr.tail_error_right, "cos_min": tr.cos_min, "cos_mean": tr.cos_mean,
        "gamma": mg.gamma, "mu_min": mg.mu_min, "rho_static": mg.rho_static, "binding": mg.binding["kind"],
        "kappa": ref.kappa, "certified_a_priori": ver["a_priori"], "certified_measured": ver["measured"],
        # The graded certificate (definitions section 5b): shares and counts at the truncation error.
        "certified_share_apriori": it["graded"].apriori.membership_share,
        "certified_share_measured": it["graded"].measured.membership_share,
        "certified_columns_apriori": it["graded"].apriori.n_columns,
        "hubs_certified_apriori": it["graded"].apriori.n_hubs,
        "pairs_certified_apriori": it["graded"].apriori.n_pairs,
        "direct_same": not it["direct_diff"],
        "energy_core": frac["core"], "energy_overlap": frac["overlap"],
        "energy_noise": frac["noise"], "n_groups": ref.partition.n_groups,
        "n_units": ref.partition.n_units, "n_edges": len(st.edge_list()), "n_hubs": int(st.hubs.sum()),
        # Outlier channels (runs.certify.outlier_record); None in a record written before they existed.
        "n_outlier_channels": None if it.get("outliers") is None else len(it["outliers"]["columns"]),
        "adversarial_norm": it["adversarial"]["smallest_change_norm"],
        "commutator": it["alignment"]["commutator"],
        "intersection_dim": it["alignment"]["intersection"]["at_window"],
        "member": all(x["passed"] for x in it["items"]),
        "failed_items": ",".join(str(x["item"]) for x in it["items"] if not x["passed"]),
        "flags": ";".join([f for f, on in (("product_zero", rig.sigma1_product == 0),
                                           ("product_negligible", it["negligible"]),
                                           ("radius_at_rounding", getattr(mg, "radius_at_rounding", False)),
                                           ("intersection_basis_dependent",
                                            any(it["alignment"]["intersection"].get("basis_dependent", ()))),
                                           ("no_channel_structure", bool(it["no_structure"])),
                                           ("outlier_dominated", bool((it.get("outliers") or {}).get("dominated"))),
                                           ("modes_basis_dependent", it["modes_basis_dependent"]),
                                           ("units_channels_no_conv_groups", it.get("units_fallback", False)))
                           if on]
                          + [f"{side}_window_degenerate" for side in it["degenerate"]]),
    }


#: The keys of a factor record, in table order (a stored record with any other keys is recomputed).
FACTOR_KEYS = ("name", "rows", "cols", "r", "fro_norm", "rho", "s_top", "s_mle", "s_window", "window_r2", "chart",
               "s_hat", "hellinger", "kl", "hellinger_top", "hellinger_mle", "hellinger_window", "fisher", "k_q", "k",
               "window_gap", "tau", "tau_gc", "tail_error", "numerical_rank", "source", "kind", "source_dtype",
               "tokens", "energy_kept", "flags")


def _interface_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    out = [r["row"] for r in records]
    cols = list(INTERFACE_COLUMNS)
    df: pd.DataFrame = pd.DataFrame(out, columns=cols)
    for col in ("slack", "drift_bound", "mu_min", "adversarial_norm", "certified_share_apriori",
                "certified_share_measured"):
        df[col] = nullable(df[col].tolist())
    return df


#: The columns of interfaces.parquet: exactly the keys of an interface record's row.
INTERFACE_COLUMNS = ("interface", "index", "left", "right", "k_left", "k_right", "slack", "amplitude", "drift",
            "drift_bound", "drift_holds", "trunc_error", "trunc_bound", "eps_trunc", "eps_trunc_gc",
            "tail_error_left", "tail_error_right", "cos_min", "cos_mean", "gamma", "mu_min", "rho_static",
            "binding", "kappa", "certified_a_priori", "certified_measured", "certified_share_apriori",
            "certified_share_measured", "certified_columns_apriori", "hubs_certified_apriori",
            "pairs_certified_apriori",
            "direct_same", "energy_core",
            "energy_overlap", "energy_noise", "n_groups", "n_units", "n_edges", "n_hubs", "n_outlier_channels",
            "adversarial_norm",
            "commutator", "intersection_dim",
            "member", "failed_items", "flags")


_ICM_COLUMNS = ("group", "f_core", "f_overlap", "f_noise", "kappa", "label", "delta_e", "delta_rho", "bound_e",
                "bound_rho", "certified", "certified_apriori", "certified_measured")


def _row_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    parts: list[pd.DataFrame] = []
    for rec in records:
        icm = rec["arrays"]
        n = icm["icm/group"].shape[0]
        parts.append(pd.DataFrame({
            "interface": [rec["name"]] * n, "row": np.arange(n), "group": icm["icm/group"],
            "f_core": icm["icm/f_core"], "f_overlap": icm["icm/f_overlap"], "f_noise": icm["icm/f_noise"],
            "kappa": icm["icm/kappa"], "label": icm["icm/label"].astype(str), "delta_e": icm["icm/delta_e"],
            "delta_rho": icm["icm/delta_rho"], "bound_e": nullable(icm["icm/bound_e"]),
            "bound_rho": nullable(icm["icm/bound_rho"]), "certified": icm["icm/certified"].astype(bool),
            "certified_apriori": icm["icm/certified_apriori"].astype(bool),
            "certified_measured": icm["icm/certified_measured"].astype(bool),
        }))
    cols = ["interface", "row", "group", "f_core", "f_overlap", "f_noise", "kappa", "label", "delta_e",
            "delta_rho", "bound_e", "bound_rho", "certified", "certified_apriori", "certified_measured"]
    table: pd.DataFrame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in cols})
    return table


_HEAD_COLUMNS = ["interface", "head_out", "head_in", "rank_out", "rank_in", "overlap"]


def _head_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per (reading head of ``l+1``, writing head of ``l``) pair of each interface that has heads."""
    parts: list[pd.DataFrame] = []
    for rec in records:
        heads = rec["detail"]["alignment"]["heads"]
        table = rec["arrays"]["heads/table"]
        if heads is None or table.size == 0:
            continue
        n_out, n_in = table.shape
        parts.append(pd.DataFrame({
            "interface": [rec["name"]] * (n_out * n_in),
            "head_out": np.repeat(np.asarray(heads["heads_out"], dtype=np.int64), n_in),
            "head_in": np.tile(np.asarray(heads["heads_in"], dtype=np.int64), n_out),
            "rank_out": np.repeat(np.asarray(heads["ranks_out"], dtype=np.int64), n_in),
            "rank_in": np.tile(np.asarray(heads["ranks_in"], dtype=np.int64), n_out),
            "overlap": table.reshape(-1),
        }))
    if not parts:
        empty: pd.DataFrame = pd.DataFrame({
            "interface": pd.Series([], dtype=str), "head_out": pd.Series([], dtype=np.int64),
            "head_in": pd.Series([], dtype=np.int64), "rank_out": pd.Series([], dtype=np.int64),
            "rank_in": pd.Series([], dtype=np.int64), "overlap": pd.Series([], dtype=np.float64)})
        return empty
    frame: pd.DataFrame = pd.concat(parts, ignore_index=True)[_HEAD_COLUMNS]
    return frame


def _interface_detail(it: dict[str, Any]) -> dict[str, Any]:
    tr, rig, mg, ref = it["transport"], it["rigidity"], it["margins"], it["reference"]
    st = ref.structure
    part = ref.partition
    bmat, blabels = it["block_energy"]
    return {
        "interface": it["name"], "left": it["left"], "right": it["right"],
        "windows": {"k_left": tr.k_left, "k_right": tr.k_right},
        "principal_cosines": {"min": tr.cos_min, "mean": tr.cos_mean, "count": int(tr.cosines.shape[0])},
        "truncation": {"exact": tr.trunc_error, "bound": tr.trunc_bound, "eps_trunc": tr.eps_trunc,
                       "eps_trunc_gc": tr.eps_trunc_gc, "tail_error_left": tr.tail_error_left,
                       "tail_error_right": tr.tail_error_right},
        "rigidity": {"slack": rig.slack, "amplitude": rig.amplitude, "drift": rig.drift,
                     "drift_bound": rig.drift_bound, "rho_term": rig.drift_rho_term, "e_term": rig.drift_e_term,
                     "min_phi_prime": rig.drift_min_phi_prime, "holds": rig.drift_holds},
        "structure": {
            "group_strategy": part.group_strategy, "unit_strategy": part.unit_strategy,
            "group_sizes": np.bincount(part.groups, minlength=part.n_groups),
            "theta": ref.theta, "kappa": ref.kappa, "hub_degree": ref.hub_degree,
            "supports": [np.flatnonzero(st.active[g]) for g in range(part.n_groups)],
            "exclusive": [st.exclusive(g) for g in range(part.n_groups)],
            "edges": [{"g": g, "h": h, "w": float(st.w[g, h]), "shared": st.shared(g, h)} for g, h in st.edge_list()],
            "hubs": np.flatnonzero(st.hubs),
            "block_energy": {"labels": blabels, "matrix": bmat},
        },
        "decomposition": it["decomposition"],
        "no_channel_structure": it["no_structure"],
        "outlier_channels": None if it.get("outliers") is None else
        {k: it["outliers"][k] for k in ("columns", "shares", "energy_share", "top_share", "top_columns", "dominated")},
        "alignment": {
            "commutator": it["alignment"]["commutator"],
            "commutator_bound": it["alignment"]["commutator_bound"],
            "commutator_route": it["alignment"]["commutator_route"],
            "intersection": it["alignment"]["intersection"],
            "heads": None if it["alignment"]["heads"] is None else
            {k: v for k, v in it["alignment"]["heads"].items() if k != "table"},
        },
        "svd": it.get("svd"),
        "flags": _interface_row(it)["flags"].split(";") if _interface_row(it)["flags"] else [],
        "margins": {"gamma": mg.gamma, "gamma_g": mg.gamma_g, "nu_g": mg.nu_g, "noise_margin": mg.noise_margin,
                    "pairs": list(mg.pairs), "mu_min": mg.mu_min, "rho_static": mg.rho_static,
                    "binding": mg.binding},
        "verdicts": {**it["verdicts"], "direct_same": not it["direct_diff"], "direct_differs": it["direct_diff"]},
        "perturbation": it["perturbation"],
        "adversarial": it["adversarial"],
        "icm_certified_fraction": it["icm_fraction"],
        "graded": _graded_detail(it),
        "protocol": it["items"],
        "member": all(x["passed"] for x in it["items"]),
        "window_search": it["window_search"],
    }


#: The columns of profile.parquet: one row per step of each interface's robustness profile.
PROFILE_COLUMNS = ("interface", "r", "column_share", "membership_share", "pair_share", "edge_share", "hub_share")


def _profile_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The robustness profiles (definitions section 5b): row ``i`` of an interface holds the shares for
    every radius in ``[r_i, r_{i+1})``; each interface's first row has ``r = 0``. Nothing to count
    (no pair, edge or hub) is null.
    """
    parts: list[pd.DataFrame] = []
    for rec in records:
        arr = rec["arrays"]
        n = arr["profile/r"].shape[0]
        frame = {"interface": [rec["name"]] * n}
        frame.update({c: arr[f"profile/{c}"] for c in PROFILE_COLUMNS[1:]})
        parts.append(pd.DataFrame(frame))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in PROFILE_COLUMNS})
    for col in PROFILE_COLUMNS[2:]:
        table[col] = nullable(table[col].to_numpy(float))
    out: pd.DataFrame = table[list(PROFILE_COLUMNS)]
    return out


def _graded_detail(it: dict[str, Any]) -> dict[str, Any]:
    """The graded certificate's summary for certificate.json (definitions section 5b)."""
    gr, tr = it["graded"], it["transport"]
    return {
        "apriori": gr.apriori.summary(), "measured": gr.measured.summary(),
        "n_memberships": int(gr.margin.size), "n_pairs": int(gr.margin.shape[0] * (gr.margin.shape[0] - 1) // 2),
        "n_hubs": int(it["reference"].structure.hubs.sum()),
        "rows_certified_apriori": int(np.sum(it["icm"]["certified_apriori"])),
        "rows_certified_measured": int(np.sum(it["icm"]["certified_measured"])),
        "profile_at": {"rho_static": gr.profile.at(it["margins"].rho_static * (1 - 1e-12)),
                       "eps_trunc": gr.profile.at(tr.eps_trunc), "trunc_error": gr.profile.at(tr.trunc_error)},
    }


def _params_json(p: dict[str, Any]) -> dict[str, Any]:
    # How the run executed (processes, cluster, memory limit) is not recorded: the same input and
    # parameters give the same bytes however they ran.
    out = {k: v for k, v in p.items() if k not in RUN_OPTIONS}
    if isinstance(out.get("groups"), dict):
        out["groups"] = {k: v for k, v in out["groups"].items()}
    return out


@dataclass(frozen=True)
class Result:
    """What ``certify`` returns: the tables, the certificate document and the report's heatmaps."""

    factors: pd.DataFrame
    interfaces: pd.DataFrame
    rows: pd.DataFrame
    certificate: dict[str, Any]
    heatmaps: dict[str, NDArray[Any]] = dataclasses.field(default_factory=dict)
    heads: pd.DataFrame = dataclasses.field(default_factory=lambda: _head_table([]))
    #: The robustness profiles (profile.parquet; definitions section 5b).
    profile: pd.DataFrame = dataclasses.field(default_factory=lambda: _profile_table([]))
    #: How the run was invoked (the input's path, where it had one): provenance only, written
    #: to provenance.json and never part of the certificate, so the same bytes under two names
    #: give the same certificate.
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def verdict(self) -> dict[str, Any]:
        """The model-level verdict (fraction of member interfaces, failed items)."""
        verdict: dict[str, Any] = self.certificate["verdict"]
        return verdict

    def save(self, out: str | os.PathLike[str], *, overwrite: bool = True, keep_others: bool = False,
             wait: bool = False, lock: OutputLock | None = None,
             pages: Callable[[Path], None] | None = None) -> Path:
        """Write the output files into ``out``, replacing only physgsa's own files.

        Every file is first written into a staging folder inside ``out``; then the old
        ``certificate.json`` is removed (so a directory caught mid-save holds no certificate and
        is never read as a result), each file is renamed into place, ``certificate.json`` last,
        and the run's records are dropped (:func:`~physgsa.outputs.directory.staged_write`).
        Files physgsa did not write are never touched: a directory holding any is refused,
        naming them, unless ``keep_others``. A symlinked ``out`` is written through to its
        target. Results of another run are replaced only with ``overwrite``. A full disk or a
        file-size limit raises :class:`~physgsa.EnvironmentFailure` and leaves the previous
        files and the records.

        Parameters
        ----------
        out : path
            The output directory (created if missing).
        overwrite, keep_others : bool
            Replace another run's results; write beside files physgsa did not write.
        wait : bool
            Wait for another run holding ``out`` (when no ``lock`` is given).
        lock : OutputLock, optional
            The lock the caller holds on ``out``; without it ``out`` is locked for the save.
        pages : callable, optional
            ``pages(stage)`` adds the report's files to the same stage, so that the pages land
            with the data, before ``certificate.json`` (:func:`physgsa.save` passes the report's
            writer; the result itself draws nothing).
        """
        out = Path(out)
        with held(out, lock, wait=wait, what="save") as own:
            refuse_foreign(out, keep_others)
            cert_path = out / "certificate.json"
            if cert_path.exists():
                old = read_json(cert_path) or {}
                if not overwrite and old.get("input_sha256") != self.certificate.get("input_sha256"):
                    raise OutputDirectoryError(
                        f"Output directory '{out}' already holds results of another run. Pass overwrite=True "
                        "(--overwrite) to replace them."
                    )

            def fill(stage: Path) -> None:
                self._write_files(stage)
                if pages is not None:
                    pages(stage)

            staged_write(out, fill, lock=own, last="certificate.json", folders={FIGURES_DIR: OWN_FIGURE},
                         drop=(RUN_DIR,))
        return out

    @classmethod
    def load(cls, out: str | os.PathLike[str]) -> Result:
        """Read a saved Result back (see :func:`load_result`)."""
        return load_result(out)

    def _write_files(self, directory: Path) -> None:
        for name, df in (("factors", self.factors), ("interfaces", self.interfaces), ("rows", self.rows),
                         ("heads", self.heads), ("profile", self.profile)):
            df.to_parquet(directory / f"{name}.parquet", index=False, engine="pyarrow", compression="zstd")
        text = json.dumps(self.certificate, indent=2, sort_keys=True, allow_nan=False)
        (directory / "certificate.json").write_text(text + "\n", encoding="utf-8")
        (directory / "provenance.json").write_text(
            json.dumps(self.provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        write_npz(directory / "heatmaps.npz", self.heatmaps)


def interface_record(it: dict[str, Any]) -> dict[str, Any]:
    """Everything the outputs need of one interface: plain JSON (``row``, ``detail``, ``margin``,
    ``items``) and arrays (the ICM rows and the heatmaps). This is what a checkpoint stores.
    """
    icm = it["icm"]
    arrays = {f"icm/{k}": np.asarray(icm[k]) for k in _ICM_COLUMNS}
    arrays["icm/label"] = arrays["icm/label"].astype(str)
    arrays.update({f"heatmaps/{k}": np.asarray(v) for k, v in it["heatmaps"].items()})
    prof = it["graded"].profile
    arrays.update({f"profile/{c}": np.asarray(getattr(prof, c), dtype=np.float64) for c in PROFILE_COLUMNS[1:]})
    arrays["graded/apriori"] = np.asarray(it["graded"].apriori.memberships)
    arrays["graded/measured"] = np.asarray(it["graded"].measured.memberships)
    heads = it["alignment"]["heads"]
    arrays["heads/table"] = np.zeros((0, 0)) if heads is None else np.asarray(heads["table"], dtype=np.float64)
    margin = {"interface": it["name"], "rho_static": it["margins"].rho_static, "binding": it["margins"].binding,
              "no_channel_structure": bool(it["no_structure"]),
              "a_priori_ratio": it["verdicts"]["a_priori_ratio"], "measured_ratio": it["verdicts"]["measured_ratio"],
              # For the model's energy-weighted graded shares (protocol.model_verdict).
              "graded": {"apriori": it["graded"].apriori.membership_share,
                         "measured": it["graded"].measured.membership_share,
                         "energy": float(np.sum(it["reference"].structure.energies ** 2))}}
    return {"name": it["name"], "index": it["index"],
            **plain({"row": _interface_row(it), "detail": _interface_detail(it), "margin": margin,
                      "items": it["items"]}),
            "arrays": arrays}


def source_label(source: str) -> str:
    """What ``certificate.json`` says of the input: its name where it is not a path (a bundled model,
    "matrices"), else "file" (the input's identity is its content, ``input_sha256``; the path is
    provenance only, in ``provenance.json``).
    """
    return "file" if ("/" in source or os.sep in source or Path(source).exists()) else source


def routes_used(params: dict[str, Any], interface_records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Which numerical route computed what (docs/definitions.md, "Numerical routes"; issue 25).

    ``decomposition``: LAPACK's gesdd, or torch on ``params["device"]``; ``svd``: how many of the
    factors in an interface took each SVD route ("gram": the fast route's Gram SVD where it
    resolved, "gesdd", "device") and the largest error level ``omega`` among them; ``commutator``:
    how many interfaces took the frames route and how many the direct one; ``block_norms``: the
    graded bounds' row-block spectral norms, from Gram matrices (fast) or SVDs (reference).
    """
    route = params.get("route", "reference")
    taken = [rec["detail"]["alignment"].get("commutator_route") for rec in interface_records]
    svds: dict[str, tuple[str, float]] = {}
    for rec in interface_records:
        got = rec["detail"].get("svd")
        if got:
            for side, r, om in zip(("left", "right"), got["routes"], got["omega"]):
                svds[rec["detail"][side]] = (r, om)
    kinds = [r for r, _ in svds.values()]
    return {
        "route": route,
        "decomposition": "LAPACK gesdd" if params.get("device") is None else f"torch on {params['device']}",
        "svd": {**{k: kinds.count(k) for k in ("gram", "gesdd", "device")},
                "omega_max": max((om for _, om in svds.values()), default=None)},
        "commutator": {"frames": taken.count("frames"), "direct": taken.count("direct")},
        "block_norms": "gram" if route == "fast" else "svd",
    }


def build_result(chain: Chain, factor_records: Sequence[dict[str, Any]], interface_records: Sequence[dict[str, Any]],
                 params: dict[str, Any], verdict: dict[str, Any],
                 input_sha256: str | None = None) -> Result:
    """Assemble the tables and the certificate document of a run from its records."""
    cert = {
        "format": "physgsa.certificate/1",
        "source": source_label(chain.source),
        "input_sha256": input_sha256,
        "parameters": _params_json(params),
        "routes": routes_used(params, interface_records),
        "versions": versions(),
        "factors": [f.name for f in chain.factors],
        "chain_breaks": [{"left": b.left, "right": b.right, "reason": b.reason} for b in chain.breaks],
        "skipped": list(chain.skipped),
        "interfaces": [rec["detail"] for rec in interface_records],
        "verdict": verdict,
    }
    heat = {f"{rec['index']}/{k.split('/', 1)[1]}": v for rec in interface_records
            for k, v in rec["arrays"].items() if k.startswith("heatmaps/")}
    return Result(factors=_factor_table(factor_records), interfaces=_interface_table(interface_records),
                  rows=_row_table(interface_records), certificate=jsonable(cert), heatmaps=heat,
                  heads=_head_table(interface_records), profile=_profile_table(interface_records),
                  provenance={"source": chain.source})


def load_result(directory: str | os.PathLike[str]) -> Result:
    """Read a saved Result back (for re-rendering reports without recomputing)."""
    d = Path(directory)
    missing = [n for n in OUTPUT_FILES if not (d / n).is_file()]
    if missing:
        raise OutputDirectoryError(f"'{d}' is not a physgsa output directory: {', '.join(missing)} missing.")
    check_archive(d / "heatmaps.npz", f"'{d / 'heatmaps.npz'}'", error=OutputDirectoryError)
    try:
        with np.load(d / "heatmaps.npz", allow_pickle=False) as npz:
            heat = {k: npz[k] for k in npz.files}
        result = Result(
            factors=pd.read_parquet(d / "factors.parquet"),
            interfaces=pd.read_parquet(d / "interfaces.parquet"),
            rows=pd.read_parquet(d / "rows.parquet"),
            heads=pd.read_parquet(d / "heads.parquet"),
            # profile.parquet came with 0.3: an older output directory has none.
            profile=pd.read_parquet(d / "profile.parquet") if (d / "profile.parquet").is_file() else _profile_table([]),
            certificate=json.loads((d / "certificate.json").read_text(encoding="utf-8")),
            heatmaps=heat,
            provenance=read_json(d / "provenance.json") or {},
        )
    except _ZIP_ERRORS + (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise OutputDirectoryError(f"'{d}' holds physgsa outputs that cannot be read ({type(exc).__name__}: "
                                   f"{str(exc)[:200]}); run certify again.") from None
    if not isinstance(result.certificate, dict) or "interfaces" not in result.certificate:
        raise OutputDirectoryError(f"'{d / 'certificate.json'}' is not a physgsa certificate; run certify again.")
    return result

"""Certified drift: whether another model routes its channels as the base model does.

For each interface, BASE's reference is fitted exactly as ``certify`` fits it (its windows
``k, k'``, row groups, column units, thresholds, ``kappa``, hub degree, radius ``rho_static``).
OTHER's Physical Alignment Matrix is then measured against it: OTHER's windowed product
``A_o = A_hat'_{o,k'} A_hat_{o,k}`` at BASE's window sizes (each factor's own SVD), and

- ``delta_norm = ||A_o - A0_base||_F`` (computed without squaring tiny numbers);
- measured verdict: ``delta_norm + delta < rho_static`` (``delta`` the same rounding
  allowance as certify's);
- a priori verdict, from the factors alone (no product is needed; definitions.md, "drift
  bound", ours): with ``W_l = (A_hat_l)_k`` the rank-``k`` truncation of a normalized factor at
  BASE's window, ``e_l = ||W_{o,l} - W_{b,l}||_F`` and ``s_l = sigma_1(A_hat_{b,l})``,

      ||A_o - A0_b||_F <= e_{l+1} s_l + s_{l+1} e_l + e_{l+1} e_l,

  since ``A_o - A0_b = D' W_b + W'_b D + D' D`` with ``D = W_o - W_b`` and ``||X Y||_F <=
  ||X||_F ||Y||_2``, ``||W_b||_2 = s``; certified a priori iff this plus ``delta`` is at most
  ``safety * rho_static``. It is exact (0) for identical models and tested against the exact
  norm on random and adversarial perturbations;
- the direct check: OTHER's structure under BASE's fixed partition and thresholds, compared
  with BASE's, naming the groups whose supports gained or lost columns, the edges that
  appeared or vanished and the hubs that changed;
- the ICM labels of every row of OTHER under BASE's masks and centroids, kept or lost;
- the graded certificate under the change (definitions.md, "The graded certificate under a
  change", ours): per-element bounds on ``||(A_o - A0_b)[G_g, C_u]||_F`` from the factor changes
  (:func:`physgsa.core.graded.change_bounds`), and the exact block norms, each certify the
  memberships, columns, hubs and pairs they can (:func:`~physgsa.core.graded.certify_elements`,
  a priori and measured); BASE's robustness profile is read at the drift bound and at
  ``delta_norm`` (each plus ``delta``). Every element so certified is checked against the direct
  check (:func:`~physgsa.core.graded.check_elements`).

A certified interface whose direct check differs is a bug and raises CertificateBugError, as
in certify. Per factor: the Part I drift (``Delta rho``, ``Delta s_hat``, ``Delta k_q``) and the
principal-angle cosines between BASE's and OTHER's dominant windows (output and input sides).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..core.chain import Chain
from ..core.graded import Graded, Shares, certify_elements, change_bounds, check_elements
from ..core.heatmaps import binned_abs
from ..core.icm import icm_rows
from ..core.perturb import changed_chain, parse_change
from ..core.resources import default_limit
from ..core.spectra import compute_spectrum, truncation_allowance
from ..core.structure import Reference, Structure, fro_norm, structure_of, unit_energies
from ..core.structure import compare as compare_structures
from ..core.transport import transport
from ..core.validation import CertificateBugError, InvalidParameterError, PhysgsaError, check_params
from ..models import chain_from, load_chain, resolve_source
from ..models.changed import ChangedSource
from ..models.load import is_matrix_file
from ..outputs.compare import CompareResult
from .certify import CERTIFY_PARAMS, PAM

__all__ = ["compare_models", "comparison_identity", "compare_chains", "CompareResult", "COMPARE_PARAMS",
           "LayoutMismatchError"]

# compare's command line takes no groups file, and its seed also draws --noise: its own help texts.
_OWN_HELP = {"groups": "Row groups: auto, kmeans, modes or heads.",
             "seed": "Seed of every random choice (groups, noise)."}
#: certify's parameters that decide BASE's reference (execution options are not needed here).
COMPARE_PARAMS = {k: dataclasses.replace(v, help=_OWN_HELP[k]) if k in _OWN_HELP else v
                  for k, v in CERTIFY_PARAMS.items()
                  if k in ("q", "chart", "groups", "n_groups", "units", "threshold", "eta", "support_quantile",
                           "outlier_factor", "kappa_fraction", "hub_degree", "safety", "pair_radius", "tau_e",
                           "tau_rho", "window_band", "gap_floor", "seed", "max_memory")}


class LayoutMismatchError(PhysgsaError):
    """Two models whose chains do not have the same layout (factor names, shapes, interfaces)."""


def check_same_layout(base: Chain, other: Chain, name: str) -> None:
    """Refuse, naming the first difference, two chains that cannot be compared factor by factor."""
    if len(base.factors) != len(other.factors):
        raise LayoutMismatchError(
            f"{name} has {len(other.factors)} factors and the base has {len(base.factors)}: compare needs two "
            "models of the same layout.")
    for fb, fo in zip(base.factors, other.factors):
        if fb.name != fo.name:
            raise LayoutMismatchError(f"{name}: factor {fo.name!r} stands where the base has {fb.name!r}.")
        if fb.shape != fo.shape:
            raise LayoutMismatchError(f"{name}: factor {fb.name!r} is {fo.shape[0]} x {fo.shape[1]}, the base's "
                                      f"is {fb.shape[0]} x {fb.shape[1]}.")
    lb = [(k.left, k.right) for k in base.links]
    lo = [(k.left, k.right) for k in other.links]
    if lb != lo:
        raise LayoutMismatchError(f"{name} has other interfaces than the base.")


def _truncation(s, k: int) -> np.ndarray:
    """The rank-``k`` truncation ``U_k S_k V_k^T`` of a normalized factor."""
    return (s.u[:, :k] * s.sigma[:k]) @ s.vt[:k]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = np.linalg.svd(b.T @ a, compute_uv=False)
    return np.clip(s, 0.0, 1.0)


def _changes(s0, s1, part) -> dict:
    """What changed between two structures under one partition, by group, unit and edge."""
    gained = {int(g): np.flatnonzero(s1.active[g] & ~s0.active[g]).tolist() for g in range(part.n_groups)}
    lost = {int(g): np.flatnonzero(s0.active[g] & ~s1.active[g]).tolist() for g in range(part.n_groups)}
    e0 = set(s0.edge_list())
    e1 = set(s1.edge_list())
    return {
        "supports_gained": {g: u for g, u in gained.items() if u},
        "supports_lost": {g: u for g, u in lost.items() if u},
        "edges_added": sorted(e1 - e0), "edges_removed": sorted(e0 - e1),
        "hubs_added": np.flatnonzero(s1.hubs & ~s0.hubs).tolist(),
        "hubs_removed": np.flatnonzero(s0.hubs & ~s1.hubs).tolist(),
    }


def _profile_elements(gr: Graded, ref: Reference, r: float) -> Shares:
    """The elements BASE's robustness profile certifies for every change with ``||E||_F <= r``.

    A membership with ``m_g(u) > r``, a column with ``r(u) > r``, a hub whose column is, a pair
    with ``r_gh > r`` (definitions section 5b); the shares are the profile's own at ``r``.
    """
    s = ref.structure
    cols = gr.unit_radius > r
    pairs = gr.pair_radius > r
    np.fill_diagonal(pairs, False)
    iu = np.triu_indices(pairs.shape[0], 1)
    at = gr.profile.at(r)
    return Shares(memberships=gr.margin > r, columns=cols, hubs=s.hubs & cols, pairs=pairs,
                  membership_share=_share(at["membership_share"]), column_share=_share(at["column_share"]),
                  n_columns=int(cols.sum()), n_hubs=int((s.hubs & cols).sum()), n_pairs=int(pairs[iu].sum()),
                  n_edges=int((pairs & s.edges)[iu].sum()))


def _share(v: float | None) -> float | None:
    """A share for the tables and JSON: ``None`` where there is nothing to count (``nan``)."""
    return None if v is None or not np.isfinite(v) else float(v)


def _graded_change(pam: PAM, s_o: Structure, beta: np.ndarray, error: np.ndarray, bound: float | None,
                   delta_norm: float, where: str) -> tuple[dict, dict]:
    """The graded certificate of one interface under the change: table columns and the JSON detail.

    ``beta`` (a priori, :func:`change_bounds`) and ``error`` (the exact block norms) certify
    elements with certify's rounding allowance; BASE's profile is read at ``bound + delta`` and
    ``delta_norm + delta`` (no bound, ``None``: nothing at it). Every certified element is checked
    against OTHER's structure.
    """
    ref, gr, eps = pam.ref, pam.graded, pam.ver["rounding_allowance"]
    apriori = certify_elements(ref, gr.margin, beta, eps)
    measured = certify_elements(ref, gr.margin, error, eps)
    at_bound = _profile_elements(gr, ref, np.inf if bound is None else bound + eps)
    at_delta = _profile_elements(gr, ref, delta_norm + eps)
    for shares, how in ((apriori, "a priori, per element"), (measured, "measured, per element"),
                        (at_bound, "the profile at the drift bound"), (at_delta, "the profile at ||Delta A||_F")):
        check_elements(ref.structure, s_o, shares, where, how)
    cols = {
        "certified_share_apriori": apriori.membership_share, "certified_share_measured": measured.membership_share,
        "certified_columns_apriori": apriori.n_columns, "certified_columns_measured": measured.n_columns,
        "n_units": ref.partition.n_units,
        "profile_at_drift_bound": at_bound.membership_share, "profile_at_delta_norm": at_delta.membership_share,
        "profile_columns_at_drift_bound": at_bound.column_share,
        "profile_columns_at_delta_norm": at_delta.column_share,
    }
    detail = {"apriori": apriori.summary(), "measured": measured.summary(),
              "profile_at_drift_bound": {"r": None if bound is None else bound + eps, **at_bound.summary()},
              "profile_at_delta_norm": {"r": delta_norm + eps, **at_delta.summary()}}
    return cols, detail


def compare_chains(base: Chain, others: list[tuple[str, Chain]], *, change: dict | None = None,
                   **params) -> CompareResult:
    """BASE's certified structure against each OTHER (see the module docstring).

    Parameters
    ----------
    base : Chain
    others : list of (name, Chain)
        Models of the same layout; a sequence (checkpoints of one training run) gives trajectories.
    change : dict, optional
        The record of the simulated change that made the single OTHER (``compare.json: change``).
    **params
        Keyword-only, validated against :data:`COMPARE_PARAMS` (certify's defaults).
    """
    p = check_params("compare", COMPARE_PARAMS, params)
    if not others:
        raise InvalidParameterError("compare needs at least one other model (or a simulated change of the base).")
    for name, ch in others:
        check_same_layout(base, ch, name)
    full_p = {**{k: v.default for k, v in CERTIFY_PARAMS.items()}, **p, "device": None, "window_search": False}
    if full_p["max_memory"] is None:
        full_p["max_memory"] = default_limit()
    kw = dict(q=p["q"], band=p["window_band"], gap_floor=p["gap_floor"], chart=p["chart"], device=None,
              max_memory=full_p["max_memory"])
    base_spec = [compute_spectrum(f, **kw) for f in base.factors]
    # W_b: BASE's truncated normalized factors at their windows (the drift bounds start from them).
    base_win = [_truncation(sb, sb.k) for sb in base_spec]
    iface_rows, factor_rows, details, panels = [], [], [], []
    # BASE's references, fitted once.
    refs = []
    for link in base.links:
        fl, fr = base.factors[link.left], base.factors[link.right]
        L, R = base_spec[link.left], base_spec[link.right]
        tr = transport(L, R, L.k, R.k)
        rng = np.random.default_rng([p["seed"], link.index])
        where = link.name(base)
        pam = PAM(L, R, tr, full_p, rng, where, fr.row_heads, fl.col_heads, fl.name, fr.name, fl.col_groups)
        base_icm = icm_rows(tr.m_window, np.zeros_like(tr.m_window), pam.ref.partition, pam.ref.structure.codes,
                            tau_e=p["tau_e"], tau_rho=p["tau_rho"], interface_certified=True,
                            zero_rows=~R.a_hat.any(axis=1))
        refs.append((tr, pam, base_icm))
    for name, other in others:
        spec = [compute_spectrum(f, **kw) for f in other.factors]
        d_hat, d_win, d_mat, base_allow, d_allow = [], [], [], [], []
        for fb, sb, so, wb in zip(base.factors, base_spec, spec, base_win):
            k = sb.k
            d_hat.append(fro_norm(so.a_hat - sb.a_hat))
            d_mat.append(_truncation(so, k) - wb)  # D = W_o - W_b
            d_win.append(fro_norm(d_mat[-1]))
            # The computed truncations against the exact ones (the window's conditioning): an
            # identical factor has an identical computed and exact truncation, so D = 0 exactly.
            same = so.a_hat.shape == sb.a_hat.shape and bool(np.array_equal(so.a_hat, sb.a_hat))
            w_b = truncation_allowance(sb.sigma, sb.a_hat.shape, k, omega=sb.omega)
            base_allow.append(w_b)
            d_allow.append(0.0 if same else w_b + truncation_allowance(so.sigma, so.a_hat.shape, k, omega=so.omega))
            factor_rows.append({
                "other": name, "factor": fb.name, "delta_rho": so.rho - sb.rho, "delta_s_hat": so.s_hat - sb.s_hat,
                "delta_k_q": so.k_q - sb.k_q, "delta_a_hat": d_hat[-1],
                "cos_min_out": float(_cosines(sb.u[:, :k], so.u[:, :k]).min()),
                "cos_min_in": float(_cosines(sb.vt[:k].T, so.vt[:k].T).min()),
            })
        for link, (tr_b, pam, base_icm) in zip(base.links, refs):
            where = link.name(base)
            L, R = spec[link.left], spec[link.right]
            Lb, Rb = base_spec[link.left], base_spec[link.right]
            tr_o = transport(L, R, tr_b.k_left, tr_b.k_right)
            ref, mg = pam.ref, pam.mg
            a_o = tr_o.m_window
            delta_norm = fro_norm(a_o - tr_b.m_window)
            eps_rounding = pam.ver["rounding_allowance"]
            e_l, e_r = d_win[link.left] + d_allow[link.left], d_win[link.right] + d_allow[link.right]
            s_l, s_r = Lb.sigma[0] + base_allow[link.left], Rb.sigma[0] + base_allow[link.right]
            bound: float | None = e_r * s_l + s_r * e_l + e_r * e_l
            if not np.isfinite(bound):
                bound = None  # a window through a repeated singular value: no bound to state
            rho = mg.rho_static
            measured = bool(delta_norm + eps_rounding < rho)
            a_priori = bool(rho > 0 and bound is not None and bound + eps_rounding <= p["safety"] * rho)
            s_o = structure_of(a_o, ref)
            diff = compare_structures(ref.structure, s_o)
            if diff and (measured or a_priori):
                raise CertificateBugError(
                    f"Interface {where}: {name} is certified against the base (||Delta A||_F = {delta_norm:.6g}, "
                    f"rho_static = {rho:.6g}) but its structure differs in {', '.join(diff)}. This is a bug in "
                    "physgsa.")
            icm_o = icm_rows(a_o, np.zeros_like(a_o), ref.partition, ref.structure.codes, tau_e=p["tau_e"],
                             tau_rho=p["tau_rho"], interface_certified=True, centroid=base_icm["centroid"],
                             zero_rows=~R.a_hat.any(axis=1))
            if pam.negligible:
                # A product at rounding level certifies nothing, as in certify.
                beta = error = np.full_like(pam.graded.margin, np.inf)
            else:
                beta = change_bounds(base_win[link.left], base_win[link.right], d_mat[link.left],
                                     d_mat[link.right], ref.partition,
                                     base_allowance=(base_allow[link.left], base_allow[link.right]),
                                     change_allowance=(d_allow[link.left], d_allow[link.right]))
                error = unit_energies(a_o - tr_b.m_window, ref.partition)
                if np.any(error > beta * (1 + 1e-9) + eps_rounding):
                    raise CertificateBugError(
                        f"Interface {where}: {name}'s exact block change exceeds its per-element bound by "
                        f"{float(np.max(error - beta)):.6g}. This is a bug in physgsa.")
            graded_cols, graded_detail = _graded_change(pam, s_o, beta, error, bound, delta_norm,
                                                        f"{where} ({name} against the base)")
            labels_b, labels_o = base_icm["label"], icm_o["label"]
            kept = labels_b == labels_o
            lost = {lab: int(np.sum((labels_b == lab) & ~kept)) for lab in ("SC", "SA", "ST", "zero")}
            iface_rows.append({
                "other": name, "interface": where, "delta_norm": delta_norm, "drift_bound": bound,
                "rho_static": rho, "ratio": delta_norm / rho if rho > 0 else None,
                "certified": measured or a_priori, "certified_a_priori": a_priori, "certified_measured": measured,
                "direct_same": not diff, "changed": ",".join(diff),
                "labels_kept": float(kept.mean()) if kept.size else 1.0,
                "sc_lost": lost["SC"], "sa_lost": lost["SA"], "st_lost": lost["ST"], **graded_cols,
            })
            changes = _changes(ref.structure, s_o, ref.partition)
            details.append({"other": name, "interface": where, "changes": changes,
                            "rounding_allowance": eps_rounding, "binding": mg.binding, "graded": graded_detail})
            units = sorted({u for us in list(changes["supports_gained"].values())
                            + list(changes["supports_lost"].values()) for u in us})
            cols = np.flatnonzero(np.isin(ref.partition.units, units)).tolist()
            panels.append(_panel(name, where, tr_b.m_window, a_o, ref.partition, cols,
                                 certified=measured or a_priori, direct_same=not diff, changed=",".join(diff)))
    doc = {"format": "physgsa.compare/1", "parameters": {k: v for k, v in p.items() if k != "max_memory"},
           "base": base.source, "others": [n for n, _ in others], "interfaces": details}
    ifs = pd.DataFrame(iface_rows)
    for col in ("ratio", "certified_share_apriori", "certified_share_measured", "profile_at_drift_bound",
                "profile_at_delta_norm", "profile_columns_at_drift_bound", "profile_columns_at_delta_norm"):
        if col in ifs:
            ifs[col] = pd.array([None if v is None or not np.isfinite(v) else float(v) for v in ifs[col]],
                                dtype="Float64")
    if change is not None:
        doc["change"] = change
    return CompareResult(ifs, pd.DataFrame(factor_rows), doc, tuple(panels))


def _panel(name: str, where: str, a0: np.ndarray, a_o: np.ndarray, part, cols: list[int], *, certified: bool,
           direct_same: bool, changed: str) -> dict:
    """What the page shows of one interface: BASE's and OTHER's ``|A|`` binned, rows by BASE's groups."""
    order = np.argsort(part.groups, kind="stable")
    return {"other": name, "interface": where, "base": binned_abs(a0, order), "other_map": binned_abs(a_o, order),
            "cols": cols, "n_cols": a0.shape[1], "certified": certified, "direct_same": direct_same,
            "changed": changed, "group_sizes": np.bincount(part.groups, minlength=part.n_groups).tolist()}


def compare_models(base, others=(), *, quantize: str | None = None, group_size: int | None = None,
                   granularity: str | None = None, prune: str | None = None, noise: float | str | None = None,
                   **params) -> CompareResult:
    """Certified drift of ``others`` against ``base``, or of ``base`` after one simulated change.

    Parameters
    ----------
    base : str, path or nn.Module
        Anything :func:`physgsa.models.chain_from` reads.
    others : sequence
        Models of the same layout, in order (the checkpoints of a training run give trajectories).
    quantize, group_size, granularity, prune, noise
        One simulated change of ``base`` instead of ``others`` (:func:`physgsa.core.perturb.parse_change`),
        applied to the stored weights of a model, or to the factors of a matrix file.
    **params
        Validated against :data:`COMPARE_PARAMS`; its ``seed`` also draws the noise.
    """
    simulated = any(v is not None for v in (quantize, prune, noise))
    if simulated and others:
        raise InvalidParameterError("Give other models or one simulated change (--quantize, --prune, --noise), "
                                    "not both.")
    if not simulated and not others:
        raise InvalidParameterError("Give at least one other model, or a simulated change: --quantize FORMAT, "
                                    "--prune magnitude:FRACTION or --noise REL.")
    if not simulated:
        base_chain = chain_from(base)
        pairs = [(str(o), chain_from(o)) for o in others]
        change = None
    else:
        change = parse_change(quantize=quantize, group_size=group_size, granularity=granularity, prune=prune,
                              noise=noise, seed=params.get("seed", COMPARE_PARAMS["seed"].default))
        if isinstance(base, str) and (base == "example" or is_matrix_file(base)):
            base_chain = chain_from(base)
            pairs = [(change.label(), changed_chain(base_chain, change))]
        else:
            base_chain = load_chain(base)
            pairs = [(change.label(), load_chain(ChangedSource(resolve_source(base), change)))]
    return compare_chains(base_chain, pairs, change=None if change is None else change.record(), **params)


def comparison_identity(others: list[str], change: dict, params: dict) -> dict | None:
    """What ``compare.json`` will say was compared, as far as the arguments tell (the base needs the model).

    The same parameters, labels and change records :func:`compare_models` writes, so the command
    line can refuse another comparison in ``--out`` (:func:`physgsa.outputs.compare.check_out`)
    before any work.

    None where the arguments name no comparison (neither OTHER nor a simulated change, or both).
    """
    simulated = any(change[k] is not None for k in ("quantize", "prune", "noise"))
    if simulated == bool(others):
        return None
    p = check_params("compare", COMPARE_PARAMS, params)
    ident: dict = {"parameters": {k: v for k, v in p.items() if k != "max_memory"}}
    if simulated:
        made = parse_change(**change, seed=p["seed"])
        ident.update(others=[made.label()], change=made.record())
    else:
        ident.update(others=[str(o) for o in others], change=None)
    return ident

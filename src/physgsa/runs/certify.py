"""``certify``: the whole flow on a chain, from spectra to the model-level verdict.

Chain -> Spectra (one SVD per factor, reused by both interfaces) -> Transport -> PAM
structure -> Certificate (margins, radius, verdicts, perturbation tests, ICM labels,
protocol) -> :class:`~physgsa.outputs.result.Result`.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Mapping

import numpy as np

from ..core.alignment import (
    DEFAULT_EPSS,
    commutator_bounded,
    commutator_from_frames,
    cuts_repeated,
    default_ks,
    head_overlaps,
    intersection_dimensions,
)
from ..core.certificate import PAIR_RADII, adversarial, margins, perturbation_tests, verdicts
from ..core.chain import Chain
from ..core.graded import Graded, check_elements, element_bounds, grade, graded_labels, row_error_bounds
from ..core.heatmaps import interface_heatmaps
from ..core.icm import LABELS, icm_rows
from ..core.linalg import matmul
from ..core.outliers import (
    FULL_SUPPORT,
    IDENTICAL_SUPPORTS,
    OUTLIER_COLUMNS,
    OUTLIER_ENERGY,
    full_support_groups,
    identical_support_groups,
    interface_outliers,
)
from ..core.protocol import interface_items, model_verdict
from ..core.resources import check_memory, default_limit, interface_bytes, parse_memory, svd_bytes
from ..core.spectra import SPECTRUM_PARAMS, compute_spectrum, dominant_window
from ..core.structure import (
    OUTLIER_FACTOR,
    SUPPORT_QUANTILE,
    THRESHOLD_RULES,
    Partition,
    block_energy,
    column_units,
    compare,
    decomposition_from_blocks,
    fit_reference,
    fro_norm,
    row_groups,
    row_profiles_scaled,
    source_incidence,
    structure_of,
    unit_energies,
)
from ..core.transport import rigidity, transport
from ..core.validation import (
    CertificateBugError,
    InvalidParameterError,
    Param,
    PhysgsaError,
    ResourceLimitError,
    check_params,
    spell,
)
from ..models.device import backend, check_device
from ..outputs.directory import environment as _environment_on_write
from ..outputs.result import FACTOR_KEYS, INTERFACE_COLUMNS, Result, build_result, factor_record, interface_record
from .executors import executor, run_tasks
from .records import RunStore, input_sha256

__all__ = ["certify", "CERTIFY_PARAMS", "WINDOW_SEARCH_QS"]

_EMPTY = np.empty((0, 0))
_EMPTY.setflags(write=False)

#: An interface's product is at rounding level, and flagged (never analysed as structure or
#: certified), when ``||M||_F <= ROUNDING_LEVEL * n * u * || |A_hat'| |A_hat| ||_F``: the computed
#: product then cannot be told from zero (its rounding error is at most ``gamma_n |A_hat'||A_hat|``
#: entrywise, ``gamma_n ~ n u``; the factor 4 also covers the rounding of ``A_hat`` itself).
ROUNDING_LEVEL = 4.0

#: The numerical routes (issue 25; docs/definitions.md, "Numerical routes"): ``fast`` takes each
#: factor's SVD from its Gram matrix where that resolves (gesdd elsewhere) and computes the section 8
#: commutator from the SVDs where one frame is square; ``reference`` keeps gesdd and forms the
#: commutator from the factors' products, as releases up to 0.2 did. Both are deterministic and
#: record their error bounds.
ROUTES = ("fast", "reference")

#: The q grid of the window search, in [0.5, 0.999].
WINDOW_SEARCH_QS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999)


def _check_user_groups(value, what: str):
    if not isinstance(value, Mapping):
        raise InvalidParameterError(
            f"{what} must be one of {{'auto', 'kmeans', 'modes', 'heads'}} or a mapping from an interface name "
            f"('left->right') or a right-hand factor name to an integer array of row groups. "
            f"Got {type(value).__name__} instead."
        )
    out = {}
    for key, labels in value.items():
        arr = np.asarray(labels)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise InvalidParameterError(
                f"{what}: the row groups for {key!r} must be a 1-D integer array; got shape {arr.shape}, "
                f"dtype {arr.dtype}."
            )
        out[str(key)] = arr.astype(np.int64)
    return out


CERTIFY_PARAMS = {
    "q": SPECTRUM_PARAMS["q"],
    "chart": SPECTRUM_PARAMS["chart"],
    "groups": Param("auto", "choice", choices=("auto", "kmeans", "modes", "heads"), extra=_check_user_groups,
                    doc="row-group strategy (auto: heads where the rows have heads, else kmeans), or given groups",
                    help="Row groups: auto (heads where rows have heads, else kmeans), kmeans, modes, heads, or an "
                         ".npz of integer arrays keyed by interface ('a->b') or right factor name."),
    "n_groups": Param(8, "int", 1, None, doc="number of k-means groups m", help="Number of k-means groups."),
    "units": Param("channels", "choice", choices=("channels", "heads", "groups"),
                   doc="column units: channels, heads, or the conv groups of a grouped convolution",
                   help="Column units: channels, heads, or groups (conv groups)."),
    "threshold": Param("gap", "choice", choices=THRESHOLD_RULES,
                       doc="support threshold rule: gap (the spec's), gap_zero (ours: a final drop to zero), "
                           "relative, quantile (ours: the fewest units holding support_quantile of the energy) or "
                           "gap_robust (ours: the largest drop once the outlier units are set aside)",
                       help="Support thresholds: gap (the spec: midpoint of the largest drop), gap_zero (ours: a final "
                            "drop to zero appended), relative (eta * max), quantile (ours: the fewest units holding "
                            "--support-quantile of the group's energy) or gap_robust (ours: the largest drop after "
                            "units above --outlier-factor times the mean energy are set aside)."),
    "eta": Param(0.5, "float", 0.0, 1.0, "right", doc="relative threshold level"),
    "support_quantile": Param(SUPPORT_QUANTILE, "float", 0.0, 1.0, "left",
                              doc="q_s of threshold='quantile': the share of a group's energy its support holds",
                              help="With --threshold quantile: the share of each group's energy its support holds."),
    "outlier_factor": Param(OUTLIER_FACTOR, "float", 2.0, None, "neither",
                            doc="outlier channels: energy share above outlier_factor / n (times the mean); also "
                                "the outlier units that threshold='gap_robust' sets aside",
                            help="A column (or, for --threshold gap_robust, a group's unit) is an outlier when its "
                                 "energy exceeds this many times the mean."),
    "full_support": Param(FULL_SUPPORT, "float", 0.0, 1.0, "left",
                          doc="flag a group whose support holds at least this share of the units",
                          help="Flag no channel structure where a group's support holds at least this share of "
                               "the units."),
    "identical_supports": Param(IDENTICAL_SUPPORTS, "float", 0.0, 1.0, "neither",
                                doc="flag when at least this share of the groups (and two) have one identical support",
                                help="Flag no channel structure where at least this share of the groups (and at least "
                                     "two) have one identical support."),
    "outlier_columns": Param(OUTLIER_COLUMNS, "float", 0.0, 1.0, "left",
                             doc="outlier_dominated: the share of the columns whose energy is tested",
                             help="Flag outlier_dominated where the top this-share of the columns (at least one) "
                                  "holds more than --outlier-energy of A0's energy."),
    "outlier_energy": Param(OUTLIER_ENERGY, "float", 0.0, 1.0, "right",
                            doc="outlier_dominated: the energy share the top columns must exceed",
                            help="See --outlier-columns."),
    "kappa_fraction": Param(0.05, "float", 0.0, 1.0, "left", doc="graph level kappa / max w"),
    "hub_degree": Param(3, "int", 2, None, doc="hub degree h"),
    "safety": Param(0.9, "float", 0.0, 1.0, "right", doc="a priori safety factor",
                    help="A priori safety factor in (0, 1]."),
    "pair_radius": Param("l2", "choice", choices=PAIR_RADII,
                         doc="pair radius in rho_static: l2 (definitions section 5b, the default) or l1 (section 5)",
                         help="Pair radius in rho_static: l2 (section 5b: root of x^2 + (|e_g|_2 + |e_h|_2) x = mu, "
                              "the default) or l1 (section 5: root of n x^2 + b x = mu)."),
    "tau_e": Param(0.5, "float", 0.0, 1.0, "neither", doc="ICM core-fraction level tau_E"),
    "tau_rho": Param(0.5, "float", -1.0, 1.0, "neither", doc="ICM correlation level tau_rho"),
    "window_band": SPECTRUM_PARAMS["window_band"],
    "gap_floor": SPECTRUM_PARAMS["gap_floor"],
    "n_perturbations": Param(32, "int", 0, None, doc="random draws per perturbation level",
                             help="Random draws per perturbation level."),
    "perturbation": Param("blocks", "choice", choices=("blocks", "explicit"),
                          doc="draw perturbed unit energies exactly (blocks) or form each E (explicit)",
                          help="Perturbation draws: blocks (exact energy sampling) or explicit (form each E)."),
    "below": Param((0.25, 0.5, 0.9), "floats", 0.0, 1.0, "neither", doc="levels t < 1 (must not change)"),
    "above": Param((1.1, 1.5, 2.0, 4.0), "floats", 1.0, None, "neither", doc="levels t > 1 (rate reported)"),
    "window_search": Param(False, "bool", doc="search the smallest certified windows",
                           help="Also search, along q from 0.5 to 0.999, the smallest windows for which the direct "
                                "check and the measured verdict hold (shown in the report)."),
    "route": Param("fast", "choice", choices=ROUTES,
                   doc="numerical route: 'fast' (Gram SVDs where they resolve, the section 8 commutator from the "
                       "SVDs) or 'reference' (LAPACK gesdd and products throughout); each number's bound is in "
                       "docs/definitions.md",
                   help="Numerical route: fast (Gram SVDs where they resolve, the commutator from the SVDs at hand) "
                        "or reference (LAPACK gesdd and products throughout). Both are deterministic; their "
                        "bounds are in docs/definitions.md."),
    "seed": Param(0, "int", 0, None, doc="seed of every random choice", help="Seed of every random choice."),
    "workers": Param(1, "int", 1, None, doc="local processes for factors and interfaces (results are identical)",
                     help="Local processes for factors and interfaces; results are identical."),
    "scheduler": Param(None, "any", allow_none=True, doc="address of a Dask scheduler to run the tasks on",
                       help="Run the tasks on the Dask scheduler at this address."),
    "dask_local": Param(0, "int", 0, None, doc="start a Dask LocalCluster of this many workers (0: none)",
                        help="Start a Dask LocalCluster of this many workers for the run."),
    "max_memory": Param(None, "any", allow_none=True, extra=parse_memory,
                        doc="memory limit in bytes or '8G' (None: 80% of the memory available at the start)",
                        help="Refuse any decomposition or product whose estimated memory exceeds this (bytes, or "
                             "512M, 8G; default: 80% of the memory available at the start)."),
    "device": Param(None, "any", allow_none=True, extra=check_device,
                    doc="None: LAPACK; 'cpu' or 'cuda': decompositions and products through torch",
                    help="Run decompositions and products through torch on this device (cpu, cuda, cuda:N); default: "
                         "LAPACK."),
}


def _groups_for(groups, left: str, right: str, row_heads=None):
    if groups == "auto":
        return "heads" if row_heads is not None else "kmeans"
    if isinstance(groups, dict):
        key = f"{left}->{right}"
        if key in groups:
            return groups[key]
        if right in groups:
            return groups[right]
        raise InvalidParameterError(
            f"The given row groups name no entry for interface {key!r}: add a key {key!r} or {right!r}."
        )
    return groups


def at_rounding_level(a_hat_left: np.ndarray, a_hat_right: np.ndarray, m: np.ndarray, device=None, *,
                      entrywise: bool = True) -> bool:
    """Whether the computed ``M = A_hat' A_hat`` is indistinguishable from zero (see :data:`ROUNDING_LEVEL`).

    The cheap normwise test ``||M||_F > c n u ||A_hat'||_F ||A_hat||_F`` settles almost every
    interface; only below it is the entrywise product ``|A_hat'| |A_hat|`` formed, so a product
    that is small because of the factors' dynamic range (no cancellation) is not mistaken for
    rounding noise. ``entrywise=False`` stops at the normwise test: for ``A0 = M_w``, formed from
    the singular frames, whose rounding is normwise (``~ n u sigma'_1 sigma_1``) whatever the
    factors' entries.
    """
    n = a_hat_left.shape[0]
    level = ROUNDING_LEVEL * n * np.finfo(np.float64).eps / 2.0
    # A decisive test from three max-reductions first (no copies): ``max|M| <= ||M||_F`` and
    # ``||X||_F <= sqrt(size) max|X|``; the factor 2 covers the rounding of the computed norms
    # (relative error below size * eps each). When it holds, the normwise test below holds too
    # and would return False: the answer is the same, without the three Frobenius norms.
    if m.size and a_hat_left.size and a_hat_right.size:
        amax = lambda x: max(float(np.max(x)), -float(np.min(x)))  # noqa: E731  (== max|x|)
        upper = np.sqrt(a_hat_left.size) * amax(a_hat_left) * np.sqrt(a_hat_right.size) * amax(a_hat_right)
        if amax(m) > 2.0 * level * upper:
            return False
    norm_m = fro_norm(m)
    if norm_m > level * fro_norm(a_hat_left) * fro_norm(a_hat_right):
        return False
    if not entrywise:
        return True
    return bool(norm_m <= level * fro_norm(matmul(np.abs(a_hat_right), np.abs(a_hat_left), device)))


class PAM:
    """The PAM pair at given windows and everything fitted on A0."""

    def __init__(self, L, R, tr, p, rng, where, row_heads, col_heads, left_name, right_name, col_groups=None):
        a0, a1 = tr.m_window, tr.m_full
        strategy = _groups_for(p["groups"], left_name, right_name, row_heads)
        # The source-mode incidence is needed only to group rows by modes.
        inc = source_incidence(R.a_hat, L.u, L.sigma, tr.k_left) if isinstance(strategy, str) and \
            strategy == "modes" else None
        # The row profiles of A0, computed once for the k-means groups and the ICM (_interface).
        self.profiles = row_profiles_scaled(a0) if isinstance(strategy, str) and strategy == "kmeans" else None
        g, m, gstrat = row_groups(strategy, a0, incidence=inc, heads=row_heads, n_groups=p["n_groups"], rng=rng,
                                  where=where, profiles=None if self.profiles is None else self.profiles[0])
        unit_strategy = p["units"]
        # units="groups" on a chain where only some factors are grouped convs (EfficientNet's
        # expand convs are dense): the other interfaces keep single channels, flagged.
        self.units_fallback = unit_strategy == "groups" and col_groups is None
        if self.units_fallback:
            unit_strategy = "channels"
        units, n_units = column_units(unit_strategy, a0.shape[1], heads=col_heads, where=where,
                                      conv_groups=col_groups)
        part = Partition(groups=g, units=units, n_groups=m, n_units=n_units, group_strategy=gstrat,
                         unit_strategy=unit_strategy)
        self.ref = fit_reference(a0, part, threshold=p["threshold"], eta=p["eta"],
                                 kappa_fraction=p["kappa_fraction"], hub_degree=p["hub_degree"],
                                 q_s=p["support_quantile"], outlier_factor=p["outlier_factor"])
        self.mg = margins(self.ref, p["pair_radius"])
        self.e = tr.m_excluded  # E = A1 - A0 as computed: what the direct check and the ICM bounds see
        self.direct_norm = fro_norm(self.e)
        # delta = 4 omega sqrt(r r'), omega the larger of the two SVDs' error levels: the frames' error
        # and the products' rounding (~ inner size * eps) both move M_w and M by at most ~ omega
        # ||A_hat'||_F ||A_hat||_F. gesdd's model level gives section 5's 32 eps max(...) sqrt(r r').
        rounding = 4.0 * max(L.omega, R.omega) * float(np.sqrt(L.r * R.r))
        self.ver = verdicts(self.mg.rho_static, tr.eps_trunc, tr.trunc_error, p["safety"],
                            direct_norm=self.direct_norm, rounding=rounding)
        # M at rounding level, or A0 (from the frames: its rounding is normwise) at rounding level.
        self.m_negligible = at_rounding_level(L.a_hat, R.a_hat, a1, backend(p["device"]))
        self.negligible = self.m_negligible or \
            at_rounding_level(L.a_hat, R.a_hat, a0, backend(p["device"]), entrywise=False)
        if self.negligible:
            self.ver.update(a_priori=False, measured=False)
        self.s1 = structure_of(a1, self.ref)
        self.diff = compare(self.ref.structure, self.s1)
        self.rounding = rounding
        self.graded = _graded(L, R, tr, self, where, gram=p["route"] == "fast")
        if self.diff and (self.ver["a_priori"] or self.ver["measured"]):
            raise CertificateBugError(
                f"Interface {where} is certified (||E||_F = {tr.trunc_error:.6g}, rho_static = "
                f"{self.mg.rho_static:.6g}) but the direct check differs in {', '.join(self.diff)}. "
                "This is a bug in physgsa."
            )


def _graded(L, R, tr, pam: PAM, where: str, *, gram: bool = False) -> Graded:
    """The graded certificate of one interface (definitions section 5b), checked against the direct check.

    A priori from the per-element bounds ``beta`` (the two windows alone), measured from the exact
    ``||E[G_g, u]||_F``; each with the rounding allowance of the computed products. A product at
    rounding level certifies nothing (its structure is rounding noise). ``gram``: the fast route's
    spectral norms of the row blocks (upper bounds from their Gram matrices).
    """
    part = pam.ref.partition
    beta = element_bounds(L, R, tr.k_left, tr.k_right, part, gram=gram)
    error = unit_energies(pam.e, part)
    if pam.negligible:
        beta = error = np.full_like(beta, np.inf)
    margin, pair_r, prof, apriori, measured = grade(pam.ref, beta, error, delta=pam.rounding)
    for shares, how in ((apriori, "a priori"), (measured, "measured")):
        check_elements(pam.ref.structure, pam.s1, shares, where, how)
    empty = np.zeros(0, dtype=bool)
    return Graded(margin=margin, unit_radius=margin.min(axis=0), pair_radius=pair_r, profile=prof, beta=beta,
                  error=error, apriori=apriori, measured=measured, rows_apriori=empty, rows_measured=empty)


def _graded_rows(L, R, tr, pam: PAM, icm: dict, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """Graded ICM labels, a priori and measured (definitions section 5b; the bound in docs/definitions.md).

    A row's a priori error bound is the smaller of ``||A'[i, :]|| sigma_{k+1} + ||(A' - A'_w)[i, :]||
    sigma_1`` and ``sqrt(sum_u beta_g(u)^2)`` (its group's blocks); the measured one is
    ``||E[i, :]||``. Both carry the rounding allowance.
    """
    gr, part = pam.graded, pam.ref.partition
    if pam.negligible:
        none = np.zeros(part.groups.shape[0], dtype=bool)
        return none, none
    blocks = np.sqrt(np.sum(gr.beta * gr.beta, axis=1))[part.groups]
    ap_err = np.minimum(row_error_bounds(L, R, tr.k_left, tr.k_right), blocks) + pam.rounding
    me_err = np.linalg.norm(pam.e, axis=1) + pam.rounding
    # Both certificates in one call: the scaled rows and their core energies are shared.
    apriori, measured = graded_labels(tr.m_window, part, pam.ref.structure.codes, icm["label"], icm["delta_rho"],
                                      ~np.stack([gr.apriori.columns, gr.measured.columns]), np.stack([ap_err, me_err]),
                                      tau_e=p["tau_e"], profiles=pam.profiles)
    return apriori, measured


def _interface(link, fl, fr, L, R, p: dict) -> dict:
    """Everything sections 3 to 7 define for the interface ``fl -> fr`` (spectra ``L``, ``R``)."""
    where = f"{fl.name}->{fr.name}"
    check_memory(interface_bytes(fr.shape[0], fl.shape[1]), p["max_memory"],
                 f"Interface {where!r} ({fr.shape[0]} x {fl.shape[1]} products)")
    rng = np.random.default_rng([p["seed"], link.index])
    # The whole C = V'^T U for the window search, which reuses it at many windows, and for the
    # fast route's commutator (one square frame needed), whose transport then reads its thin
    # blocks from it; otherwise one window needs only thin blocks of C.
    frames = p["route"] == "fast" and (L.u.shape[1] == L.u.shape[0] or R.vt.shape[0] == R.vt.shape[1])
    c = matmul(R.vt, L.u, backend(p["device"])) if p["window_search"] or frames else None
    m_full = matmul(R.a_hat, L.a_hat, backend(p["device"]))
    tr = transport(L, R, L.k, R.k, c=c, m_full=m_full, device=backend(p["device"]))
    rig = rigidity(L, R, m_full, seed=p["seed"] + link.index)
    if rig.slack is not None and rig.slack < -1e-9:
        raise CertificateBugError(f"Interface {where}: slack {rig.slack:.3e} < 0. This is a bug in physgsa.")
    # The exact error and its bound are read off the same frames; frames within omega of orthonormal
    # move the first relative to the second by at most ~ 4 omega.
    if tr.trunc_error > tr.trunc_bound * (1 + 1e-10 + 8.0 * max(L.omega, R.omega)) + 1e-300:
        raise CertificateBugError(
            f"Interface {where}: exact truncation error {tr.trunc_error:.17g} exceeds its bound "
            f"{tr.trunc_bound:.17g}. This is a bug in physgsa."
        )
    pam = PAM(L, R, tr, p, rng, where, fr.row_heads, fl.col_heads, fl.name, fr.name, fl.col_groups)
    ref, mg, ver = pam.ref, pam.mg, pam.ver
    a0, e = tr.m_window, pam.e
    s0 = ref.structure
    decomp = decomposition_from_blocks(a0, s0, ref.partition)
    if pam.m_negligible:
        # Rounding noise has no slack to speak of (sigma_1 of noise): reported as null.
        rig = dataclasses.replace(rig, slack=None)
    if pam.negligible:
        pert = {"ran": False, "reason": "the product is at rounding level (indistinguishable from zero)",
                "mode": p["perturbation"], "levels": [], "below_ok": True}
    else:
        pert = perturbation_tests(a0, ref, mg.rho_static, below=p["below"], above=p["above"],
                                  n_draws=p["n_perturbations"], rng=rng, where=where, mode=p["perturbation"])
    adv = adversarial(a0, ref, mg)
    certified = ver["a_priori"] or ver["measured"]
    icm = icm_rows(a0, e, ref.partition, s0.codes, tau_e=p["tau_e"], tau_rho=p["tau_rho"],
                   interface_certified=certified, profiles=pam.profiles, zero_rows=~R.a_hat.any(axis=1))
    if pam.negligible:
        # Every row of a product at rounding level is zero to rounding: no label is meaningful.
        icm["label"] = np.full(a0.shape[0], "zero", dtype=object)
        icm["certified"] = np.zeros(a0.shape[0], dtype=bool)
    icm["certified_apriori"], icm["certified_measured"] = _graded_rows(L, R, tr, pam, icm, p)
    labels = icm["label"]
    icm_fraction = {}
    for lab in LABELS:
        sel = labels == lab
        if sel.any():
            icm_fraction[lab] = float(icm["certified"][sel].mean())
    nonzero = labels != "zero"
    icm_all = bool(nonzero.any() and icm["certified"][nonzero].all())
    items = interface_items(left=L, right=R, a0_dtype=a0.dtype, gap_floor=p["gap_floor"], rig=rig, tr=tr,
                            decomp=decomp, mg=mg, ver=ver, direct_diff=pam.diff, pert=pert,
                            icm_fraction=icm_fraction, icm_all=icm_all)
    bmat, blabels, unit_block = block_energy(a0, ref.partition, s0)
    heat = interface_heatmaps(a0, tr.m_full, e, ref.partition, s0, unit_block, icm["label"], icm["certified"],
                              graded={"apriori": pam.graded.apriori.memberships,
                                      "measured": pam.graded.measured.memberships})
    search = _window_search(L, R, c, m_full, p, link, fl, fr) if p["window_search"] else None
    alignment = _alignment(L, R, fl, fr, tr, c if frames else None)
    return {
        "name": where, "left": fl.name, "right": fr.name, "index": link.index,
        # The interface's big matrices (M, M_w, E) are not kept past this point: only figures are.
        "transport": dataclasses.replace(tr, m_full=_EMPTY, m_window=_EMPTY, m_excluded=_EMPTY),
        "rigidity": rig, "reference": ref, "margins": mg, "verdicts": ver, "graded": pam.graded,
        "direct_diff": pam.diff, "decomposition": decomp, "perturbation": pert, "adversarial": adv,
        "icm": icm, "icm_fraction": icm_fraction, "items": items, "block_energy": (bmat, blabels),
        "negligible": pam.negligible, "heatmaps": heat,
        "degenerate": [side for side, spec in (("left", L), ("right", R)) if "window_degenerate" in spec.flags],
        "no_structure": no_channel_structure(s0, decomp, pam.negligible, p),
        "outliers": outlier_record(a0, p),
        "modes_basis_dependent": ref.partition.group_strategy == "modes" and repeated_in_window(L.sigma, tr.k_left),
        "units_fallback": pam.units_fallback,
        "window_search": search,
        "alignment": alignment,
        "svd": {"routes": [L.svd_route, R.svd_route], "omega": [L.omega, R.omega]},
    }


#: The tolerance of the intersection dimension reported as a column (the whole grid is in the certificate).
INTERSECTION_EPS = 1e-2
#: The largest equal rank of the intersection-dimension grid (the windows are covered besides).
GRID_MAX_K = 64


def _alignment(L, R, fl, fr, tr, c=None) -> dict:
    """Section 8's weight-space diagnostics of one interface (beyond the two papers).

    The intersection dimension ``#{cos >= 1 - eps}`` at the dominant windows ``(k, k')`` (from
    the transport's principal cosines, at no extra cost) and over the grid of small equal ranks
    ``k = 1, 2, 4, ..., min(64, r)`` of ``span(U_l[:, :k])`` and ``span(V'[:, :k])``, at every eps of
    ``DEFAULT_EPSS``; the commutator of ``A_hat_l A_hat_l^T`` and ``A_hat_{l+1}^T A_hat_{l+1}``;
    and, where the left factor's columns and the right factor's rows carry heads, the head
    subspace overlap table (rows: reading heads of ``l+1``, columns: writing heads of ``l``).
    The grid stops at 64 because each rank costs an SVD of its block (a grid to the full width
    cost a third of certify on 768-wide chains); the windows themselves are always covered.
    Given the whole ``C`` (the fast route, a square frame), the commutator comes from the SVDs
    (:func:`~physgsa.core.alignment.commutator_from_frames`), else from the factors' products
    (:func:`~physgsa.core.alignment.commutator_bounded`); either way with its error bound.
    """
    r = min(L.sigma.shape[0], R.sigma.shape[0])
    ks = [k for k in default_ks(r) if k <= GRID_MAX_K]
    dims, ks = intersection_dimensions(L.u, R.vt, ks=ks, epss=DEFAULT_EPSS)
    window = [int(np.sum(tr.cosines >= 1.0 - eps)) for eps in DEFAULT_EPSS]
    at_window = window[DEFAULT_EPSS.index(INTERSECTION_EPS)]
    if c is None:
        com = commutator_bounded(L.a_hat, R.a_hat)
    else:
        com = commutator_from_frames(L.u, L.sigma, R.vt, R.sigma, shape_left=(L.rows, L.cols),
                                     shape_right=(R.rows, R.cols), c=c, omega_left=L.omega, omega_right=R.omega)
    out = {"commutator": com.value, "commutator_bound": com.bound, "commutator_route": com.route,
           "intersection": {"ks": list(ks), "epss": list(DEFAULT_EPSS), "dims": dims,
                            "windows": [tr.k_left, tr.k_right], "at_windows": window,
                            "eps": INTERSECTION_EPS, "at_window": at_window,
                            "basis_dependent": cuts_repeated(L.sigma, R.sigma, ks)},
           "heads": None}
    if fl.col_heads is not None and fr.row_heads is not None:
        ho = head_overlaps(L.a_hat, fl.col_heads, R.a_hat, fr.row_heads)
        out["heads"] = {"table": ho.table, "ranks_in": ho.ranks_left, "ranks_out": ho.ranks_right,
                        "heads_in": list(ho.heads_left), "heads_out": list(ho.heads_right)}
    return out


def no_channel_structure(s0, decomp: dict, negligible: bool, p: dict | None = None) -> list[str]:
    """The reasons why an interface's structure is trivial (empty: it has channel structure).

    A group whose support holds at least ``full_support`` of the units (default 0.95: the
    tolerance version of "every unit active"), at least ``identical_supports`` of the groups (and
    two) sharing one identical support, every unit a hub, or no core energy leaves nothing to
    tell the groups apart: the masks, graph and labels then carry no channel structure, whatever
    the certificate says about their stability (docs/definitions.md, "Outlier channels and
    tolerance flags", ours). ``p``: the certify parameters (their defaults where omitted).
    """
    full_share = FULL_SUPPORT if p is None else p["full_support"]
    same_share = IDENTICAL_SUPPORTS if p is None else p["identical_supports"]
    reasons = []
    if negligible:
        reasons.append("the product is at rounding level")
    n_units = s0.active.shape[1]
    full = full_support_groups(s0.active, full_share)
    if full.size:
        sizes = s0.active.sum(axis=1)[full]
        how = "every unit active" if sizes.min() == n_units else \
            (f"{int(sizes.min())}{'' if sizes.min() == sizes.max() else f' to {int(sizes.max())}'} of {n_units} "
             f"units active (at least {full_share:g} of them)")
        reasons.append(f"group{'s' if full.size > 1 else ''} {', '.join(map(str, full.tolist()))} "
                       f"ha{'ve' if full.size > 1 else 's'} {how}")
    same = identical_support_groups(s0.active, same_share)
    if same.size:
        k = int(s0.active[same[0]].sum())
        reasons.append(f"groups {', '.join(map(str, same.tolist()))} have one identical support of {k} "
                       f"unit{'' if k == 1 else 's'}")
    if s0.hubs.all() and s0.hubs.size:
        reasons.append("every unit is a hub")
    if decomp["fraction"]["core"] == 0.0:
        reasons.append("the core energy is 0")
    return reasons


def outlier_record(a0: np.ndarray, p: dict | None = None) -> dict:
    """The outlier channels of an interface and its ``outlier_dominated`` flag (:mod:`physgsa.core.outliers`)."""
    if p is None:
        return interface_outliers(a0)
    return interface_outliers(a0, factor=p["outlier_factor"], columns=p["outlier_columns"],
                              energy=p["outlier_energy"])


def repeated_in_window(sigma: np.ndarray, k: int) -> bool:
    """Whether two of the top ``k`` singular values coincide to rounding (a basis LAPACK chooses)."""
    if k < 2:
        return False
    tol = 8.0 * sigma.shape[0] * np.finfo(np.float64).eps * sigma[0]
    return bool(np.any(sigma[: k - 1] - sigma[1:k] <= tol))


def _window_search(L, R, c, m_full, p, link, fl, fr) -> dict:
    """Smallest windows along q for which the direct check, and the measured verdict, hold."""
    where = f"{fl.name}->{fr.name}"
    steps = []
    for q in WINDOW_SEARCH_QS:
        _, k, _ = dominant_window(L.sigma, q, p["window_band"])
        _, kp, _ = dominant_window(R.sigma, q, p["window_band"])
        tr = transport(L, R, k, kp, c=c, m_full=m_full, device=backend(p["device"]))
        rng = np.random.default_rng([p["seed"], link.index])
        pam = PAM(L, R, tr, p, rng, where, fr.row_heads, fl.col_heads, fl.name, fr.name, fl.col_groups)
        steps.append({"q": q, "k_left": k, "k_right": kp, "trunc_error": tr.trunc_error,
                      "rho_static": pam.mg.rho_static, "direct_same": not pam.diff,
                      "certified_measured": pam.ver["measured"]})
    first = lambda key: next((s for s in steps if s[key]), None)  # noqa: E731
    return {"steps": steps, "smallest_direct": first("direct_same"), "smallest_measured": first("certified_measured")}


def _check_memory_up_front(chain: Chain, limit: int) -> None:
    """Every decomposition's and every interface's memory estimate, before any work is done."""
    for f in chain.factors:
        m, n = f.shape
        check_memory(svd_bytes(m, n), limit, f"Factor {f.name!r} ({m} x {n}): its decomposition")
    for k in chain.links:
        fl, fr = chain.factors[k.left], chain.factors[k.right]
        check_memory(interface_bytes(fr.shape[0], fl.shape[1]), limit,
                     f"Interface {k.name(chain)!r} ({fr.shape[0]} x {fl.shape[1]} products)")


def _check_partition_up_front(chain: Chain, p: dict) -> None:
    """Every interface's row groups and column units, as far as the chain's layout decides them.

    ``groups='heads'`` and ``units='heads'`` need head layouts, and given groups need an entry of
    the right length for every interface: all known from the chain alone, so refused before
    anything is decomposed or written (the same messages as where the groups are fitted).
    """
    kmeans = [(chain.factors[k.right].shape[0], k.name(chain)) for k in chain.links if isinstance(
        g := _groups_for(p["groups"], chain.factors[k.left].name, chain.factors[k.right].name,
                         chain.factors[k.right].row_heads), str) and g == "kmeans"]
    if kmeans and p["n_groups"] > min(kmeans)[0] and p["n_groups"] != CERTIFY_PARAMS["n_groups"].default:
        # A value given is never cut silently to the row count (one row per group is no channel
        # structure); the default is "at most 8".
        raise InvalidParameterError(f"{spell('n_groups', p['n_groups'])} is more than the {min(kmeans)[0]} rows of "
                                    f"interface {min(kmeans)[1]}: k-means makes at most one group per row. Give at "
                                    f"most {min(kmeans)[0]}.")
    for link in chain.links:
        fl, fr = chain.factors[link.left], chain.factors[link.right]
        where = f"{fl.name}->{fr.name}"
        strategy = _groups_for(p["groups"], fl.name, fr.name, fr.row_heads)
        if isinstance(strategy, np.ndarray) or strategy == "heads":
            row_groups(strategy, np.empty((fr.shape[0], 0)), incidence=None, heads=fr.row_heads,
                       n_groups=p["n_groups"], rng=np.random.default_rng(0), where=where)
        if p["units"] == "heads" or (p["units"] == "groups" and fl.col_groups is not None):
            column_units(p["units"], fl.shape[1], heads=fl.col_heads, where=where, conv_groups=fl.col_groups)


def _compute(chain: Chain, p: dict, kw: dict, pool, store, report) -> tuple[list, list]:
    """The factor and interface records of a run: verified ones from ``store``, the rest computed.

    Memory is set by the widest interface, not by the depth: the interfaces run in order, a few
    at a time (one per worker), each factor is decomposed just before its first interface and its
    spectrum is released after its last, and a deferred factor is read from its source only by
    the task that decomposes it. On a Dask cluster the spectra stay with the workers (the
    interface tasks receive them there); this process holds only records.
    """
    fs, links = chain.factors, chain.links
    f_records = [store.factor(i, FACTOR_KEYS) if store else None for i in range(len(fs))]
    i_records = [store.interface(i, INTERFACE_COLUMNS) if store else None for i in range(len(links))]
    todo_if = [i for i, rec in enumerate(i_records) if rec is None]
    # A factor is decomposed if its record is missing or an unfinished interface needs its frames.
    needed = {f for i in todo_if for f in (links[i].left, links[i].right)}
    todo_f = [i for i in range(len(fs)) if f_records[i] is None or i in needed]
    if store is not None and len(todo_if) < len(links):
        report("resume", len(links) - len(todo_if), len(links), "interfaces already done in an interrupted run")
    if store is not None and store.discarded:
        report("resume", store.discarded, store.discarded, "damaged or foreign records discarded (recomputed)")
    width = pool.width if pool is not None else 1
    remote = pool is not None and pool.remote
    names_f, names_if = [f.name for f in fs], [k.name(chain) for k in links]
    count = {"spectra": len(fs) - len(todo_f), "interfaces": len(links) - len(todo_if)}
    spectra = {}  # factor index -> Spectrum (here) or a Dask future (held by a worker)

    def keep_factor(i, rec):
        f_records[i] = rec
        if store:
            with _environment_on_write(store.out):
                store.save_factor(i, rec)

    def factor_done(i, s):
        if f_records[i] is None:
            keep_factor(i, factor_record(fs[i], s))
        if i in needed:
            spectra[i] = s
        count["spectra"] += 1
        report("spectra", count["spectra"], len(fs), names_f[i])

    def interface_done(i, it):
        i_records[i] = interface_record(it)
        if store:
            with _environment_on_write(store.out):
                store.save_interface(i, i_records[i])
        count["interfaces"] += 1
        report("interfaces", count["interfaces"], len(links), names_if[i])

    def decompose(idx):
        if not remote:
            run_tasks(pool, compute_spectrum, lambda i: ((fs[i],), kw), idx, names_f, "spectra", _silent,
                      done=factor_done)
            return
        futures = {i: pool.submit(compute_spectrum, fs[i], **kw) for i in idx}
        todo = {pool.submit(factor_record, fs[i], futures[i]): i for i in idx if f_records[i] is None}
        for fut in pool.as_completed(todo):
            keep_factor(todo[fut], fut.result())
        for i in idx:
            if i in needed:
                spectra[i] = futures[i]
            count["spectra"] += 1
            report("spectra", count["spectra"], len(fs), names_f[i])

    # Factors whose record alone is missing: decomposed, recorded and let go at once.
    alone = [i for i in todo_f if i not in needed]
    for start in range(0, len(alone), width):
        decompose(alone[start:start + width])
    last = {}
    for pos, i in enumerate(todo_if):
        last[links[i].left] = last[links[i].right] = pos

    def job(i):
        k = links[i]
        return (k, fs[k.left], fs[k.right], spectra[k.left], spectra[k.right], p), {}

    for start in range(0, len(todo_if), width):
        chunk = todo_if[start:start + width]
        fresh = list(dict.fromkeys(f for i in chunk for f in (links[i].left, links[i].right) if f not in spectra))
        decompose(fresh)
        run_tasks(pool, _interface, job, chunk, names_if, "interfaces", _silent, done=interface_done)
        for f in [f for f in spectra if last[f] < start + width]:
            del spectra[f]  # its last interface is done: the frames go (on a cluster, the worker lets go too)
    return f_records, i_records


def _silent(stage, done, total, name):
    """Progress is counted by ``_compute`` itself, across the chunks it hands to ``run_tasks``."""


def certify(chain: Chain, *, progress=None, checkpoint=None, overwrite: bool = False, keep_others: bool = False,
            wait: bool = False, lock=None, **params) -> Result:
    """Spectra, transport, PAM structure and the static certificate of every interface.

    Parameters
    ----------
    chain : Chain
        From :meth:`Chain.from_arrays`, :func:`physgsa.read_chain` or an adapter.
    **params
        Keyword-only, validated against :data:`CERTIFY_PARAMS` (defaults there and in
        docs/definitions.md): ``q`` (0.9), ``chart`` ("top"), ``groups`` ("auto": heads where the rows carry a head
        layout, else "kmeans"),
        ``n_groups`` (8), ``units`` ("channels"), ``threshold`` ("gap"), ``eta`` (0.5),
        ``kappa_fraction`` (0.05), ``hub_degree`` (3), ``safety`` (0.9), ``tau_e`` (0.5),
        ``tau_rho`` (0.5), ``window_band`` (None: (1 - q) / 2), ``gap_floor`` (1e-3), ``n_perturbations`` (32),
        ``perturbation`` ("blocks"),
        ``below`` ((0.25, 0.5, 0.9)), ``above`` ((1.1, 1.5, 2, 4)), ``window_search`` (False),
        ``seed`` (0), ``workers`` (1: serial; N: factors and interfaces on N local processes,
        with results identical to a serial run).

    progress : callable, optional
        Called as ``progress(stage, done, total, name)`` after each factor ("spectra") and each
        interface ("interfaces"); the command line draws its progress bars with it.
    checkpoint : path, optional
        An output directory to keep each finished record in (``DIR/.physgsa-run``, see
        :mod:`physgsa.runs.records`); a rerun with the same input and parameters resumes from
        them. The command line passes its ``--out``.
    overwrite : bool
        With ``checkpoint``: discard records or results of a different run there instead of
        refusing.
    keep_others : bool
        With ``checkpoint``: write beside files physgsa did not write instead of refusing
        (they are never touched).
    wait : bool
        With ``checkpoint``: wait for another run holding the directory instead of refusing.
    lock : physgsa.outputs.directory.OutputLock, optional
        With ``checkpoint``: the lock the caller holds on it (the command line holds it for the
        whole run); without it the directory is locked while the records are written.

    Returns
    -------
    Result
        ``.factors``, ``.interfaces``, ``.rows`` (DataFrames), ``.certificate`` (dict), ``.save(dir)``.
    """
    if not isinstance(chain, Chain):
        raise InvalidParameterError(
            f"certify takes a physgsa Chain (Chain.from_arrays or read_chain); got {type(chain).__name__} instead."
        )
    p = check_params("certify", CERTIFY_PARAMS, params)
    if p["max_memory"] is None:
        p["max_memory"] = default_limit()
    report = progress if progress is not None else (lambda stage, done, total, name: None)
    # The fast route tries the Gram SVD per factor (kept where it resolves every decision); the
    # window search refits windows at other q, which the Gram route's check does not cover.
    svd = "gram" if p["route"] == "fast" and not p["window_search"] else "gesdd"
    kw = dict(q=p["q"], band=p["window_band"], gap_floor=p["gap_floor"], chart=p["chart"], device=backend(p["device"]),
              max_memory=p["max_memory"], svd=svd)
    fs, links = chain.factors, chain.links
    # Everything that can be refused is refused before anything is written: the row groups and
    # column units the layout decides, every memory estimate (from the shapes alone), then the
    # scheduler, then the output directory.
    _check_partition_up_front(chain, p)
    _check_memory_up_front(chain, p["max_memory"])
    sha = input_sha256(chain, p)  # recorded in certificate.json: which input this certifies
    with executor(p) as pool:
        store = None
        if checkpoint is not None:
            store = RunStore(checkpoint, sha, p, factor_names=[f.name for f in fs],
                             interface_names=[k.name(chain) for k in links], overwrite=overwrite,
                             keep_others=keep_others, wait=wait, lock=lock)
        try:
            f_records, i_records = _compute(chain, p, kw, pool, store, report)
        except PhysgsaError as exc:
            # Bad input found mid-run: a rerun of the same input and parameters would be refused
            # again, so its records are worthless, and they must not block the corrected rerun.
            # (A memory refusal is the exception: a rerun with a larger --max-memory, which is no
            # part of the run's identity, resumes from them.)
            if store is not None and not isinstance(exc, ResourceLimitError):
                shutil.rmtree(store.dir, ignore_errors=True)
            raise
        finally:
            if store is not None:
                store.release()
    verdict = model_verdict([rec["name"] for rec in i_records], [rec["items"] for rec in i_records],
                            len(chain.breaks), [rec["margin"] for rec in i_records])
    return build_result(chain, f_records, i_records, p, verdict, input_sha256=sha)

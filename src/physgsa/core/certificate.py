"""The static certificate (definitions section 5).

Margins of the reference structure, the radius ``rho_static`` under which every perturbation
``||E||_F < rho_static`` leaves supports, degrees, masks, graph, SRS sets and hubs unchanged,
the three verdicts and the perturbation tests (random below and above the radius, and an
adversarial one that shows how tight the radius is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .structure import Reference, compare, fro_norm, structure_of
from .validation import CertificateBugError

# The draws of _block_draws: z, chi^2 and ||Z||_F^2.
_Draws = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]

__all__ = ["Margins", "margins", "verdicts", "perturbation_tests", "adversarial"]


@dataclass(frozen=True)
class Margins:
    """Margins of a reference structure and the static radius.

    ``gamma_g = min_u |e_g(u) - theta_g|``; ``nu_g = max_{u not in S_g} e_g(u)`` (0 where every
    unit is active); ``pairs`` holds, for each pair with a shared unit, ``w``, ``mu = |w - kappa|``,
    ``n = |S_g ∩ S_h|``, ``b = sum (e_g + e_h)``, ``l2 = ||e_g|_I|| + ||e_h|_I||`` and ``rho_gh``
    (positive root of ``x^2 + l2 x = mu``, or of ``n x^2 + b x = mu`` with ``pair_radius="l1"``),
    with ``w`` and ``mu`` also in units of ``scale^2`` (``*_scaled``, where the comparisons are
    made); ``rho_static = min(gamma, min rho_gh)``; ``binding`` says which margin gives the radius.
    ``radius_at_rounding``: the computed radius was within the rounding of the energies
    (:data:`RADIUS_ROUNDING`) and ``rho_static`` is 0 (energies tied in exact arithmetic).
    """

    gamma_g: np.ndarray
    gamma: float
    gamma_at: tuple[int, int]
    nu_g: np.ndarray
    noise_margin: np.ndarray
    pairs: tuple[dict[str, Any], ...]
    mu_min: float | None
    mu_min_scaled: float | None
    rho_static: float
    binding: dict[str, Any]
    radius_at_rounding: bool = False


#: A margin at most ``RADIUS_ROUNDING * n * eps`` times its own scale (``|e_g(u) - theta_g|`` against
#: ``max(e_g(u), theta_g)``, ``mu_gh`` against ``max(w_gh, kappa)``; ``n``: the largest block's entries
#: plus the units, the longest sums behind an energy and a pair weight) is within the rounding of the
#: energies it is a difference of: ``rho_static`` is then 0, flagged ``radius_at_rounding``.
RADIUS_ROUNDING = 8.0


#: The pair radii: ``l2`` (definitions section 5b, the default) or ``l1`` (section 5's).
PAIR_RADII = ("l2", "l1")


def margins(ref: Reference, pair_radius: str = "l2") -> Margins:
    """Margins and ``rho_static`` of the reference structure (definitions sections 5 and 5b).

    ``pair_radius="l2"`` (the default, section 5b): ``rho_gh`` is the positive root of
    ``x^2 + (||e_g|_I||_2 + ||e_h|_I||_2) x = mu_gh`` (Cauchy–Schwarz on the shared units
    ``I``), never smaller than ``"l1"`` (section 5): the root of ``n_gh x^2 + b_gh x = mu_gh``.

    Pair weights are held in units of ``ref.scale^2`` (a power of two at the largest unit
    energy), so the pair radii are computed there and scaled back: with ``x = c x'``,
    ``n x^2 + b x = mu`` is ``n x'^2 + (b / c) x' = mu / c^2``. Nothing is squared in the
    matrix's own units, so energies near 1e-162 give the same radius as the same matrix scaled up.
    """
    s = ref.structure
    e = s.energies
    c = ref.scale
    gap = np.abs(e - ref.theta[:, None])
    gamma_g = gap.min(axis=1)
    flat = int(np.argmin(gap))
    g0, u0 = divmod(flat, gap.shape[1])
    gamma = float(gap[g0, u0])
    nu_g = np.where(~s.active, e, 0.0).max(axis=1)
    pairs: list[dict[str, Any]] = []
    m = e.shape[0]
    for g in range(m):
        for h in range(g + 1, m):
            shared = s.active[g] & s.active[h]
            n = int(shared.sum())
            if n == 0:
                continue
            w_s = float(s.w_scaled[g, h])
            mu_s = abs(w_s - ref.kappa_scaled)
            b = float(np.sum(e[g, shared] + e[h, shared]))
            # ||e_g|_I|| + ||e_h|_I||, each norm taken on energies divided by c (no underflow).
            a_s = float(np.linalg.norm(e[g, shared] / c) + np.linalg.norm(e[h, shared] / c))
            # Stable positive root of n' x'^2 + b' x' - mu' = 0, then x = c x' (l2: n' = 1, b' = a).
            lead, b_s = (1, a_s) if pair_radius == "l2" else (n, b / c)
            root = c * (2.0 * mu_s / (b_s + np.sqrt(b_s * b_s + 4.0 * lead * mu_s))) if mu_s > 0 else 0.0
            pairs.append({"g": g, "h": h, "w": w_s * c * c, "w_scaled": w_s, "mu": mu_s * c * c, "mu_scaled": mu_s,
                          "n": n, "b": b, "l2": a_s * c, "rho": float(root)})
    binding: dict[str, Any] = {"kind": "unit_gap", "group": int(g0), "unit": int(u0), "value": gamma,
               "energy": float(e[g0, u0]), "theta": float(ref.theta[g0])}
    rho = gamma
    for p in pairs:
        if p["rho"] < rho:
            rho = p["rho"]
            binding = {"kind": "pair_overlap", "group": p["g"], "other": p["h"], "value": p["rho"],
                       "w": p["w"], "kappa": ref.kappa, "mu": p["mu"]}
    mu_min = min((p["mu"] for p in pairs), default=None)
    mu_min_scaled = min((p["mu_scaled"] for p in pairs), default=None)
    # A margin within the rounding of the energies it is a difference of (ties in exact arithmetic
    # computed one ulp apart) certifies nothing: the radius is then 0, flagged. Each margin is
    # tested against its own scale (max(e_g(u), theta_g); max(w_gh, kappa) in units of c^2).
    tol = RADIUS_ROUNDING * (int(_block_sizes(ref).max(initial=0)) + int(e.shape[1])) * np.finfo(np.float64).eps
    at_rounding = bool(rho > 0 and (
        bool(np.any(gap <= tol * np.maximum(e, ref.theta[:, None])))
        or any(p["mu_scaled"] <= tol * max(p["w_scaled"], ref.kappa_scaled) for p in pairs)))
    return Margins(gamma_g=gamma_g, gamma=gamma, gamma_at=(int(g0), int(u0)), nu_g=nu_g,
                   noise_margin=ref.theta - nu_g, pairs=tuple(pairs), mu_min=mu_min, mu_min_scaled=mu_min_scaled,
                   rho_static=0.0 if at_rounding else float(rho), binding=binding, radius_at_rounding=at_rounding)


def verdicts(rho_static: float, eps_trunc: float, trunc_error: float, safety: float, *,
             direct_norm: float | None = None, rounding: float = 0.0) -> dict[str, Any]:
    """The a priori and measured verdicts.

    A priori: ``eps_trunc + delta <= safety * rho_static`` with ``rho_static > 0`` (no full
    product needed). Measured: ``max(||E||_F, ||A1 - A0||_F) + delta < rho_static`` (strict: at
    equality a unit can land on its threshold), where ``||A1 - A0||_F`` is the difference of the
    two matrices as computed and ``delta = rounding`` bounds the rounding of the computed
    products and energies, so a certificate also holds for the floating-point matrices that
    the direct check compares.
    """
    delta = rounding
    measured_norm = trunc_error if direct_norm is None else max(trunc_error, direct_norm)
    return {
        "a_priori": bool(rho_static > 0 and eps_trunc + delta <= safety * rho_static),
        "measured": bool(measured_norm + delta < rho_static),
        "a_priori_ratio": float(eps_trunc / (safety * rho_static)) if rho_static > 0 else None,
        "measured_ratio": float(measured_norm / rho_static) if rho_static > 0 else None,
        "measured_norm": float(measured_norm),
        "rounding_allowance": float(delta),
    }


def _block_sizes(ref: Reference) -> np.ndarray:
    """``n_gu = |G_g| * |cols(u)|``: the number of entries of each (group, unit) block."""
    part = ref.partition
    rows = np.bincount(part.groups, minlength=part.n_groups)
    cols = np.bincount(part.units, minlength=part.n_units)
    return np.outer(rows, cols)


def _block_draws(e: np.ndarray, dof: np.ndarray, rng: np.random.Generator, n_draws: int | None = None) -> _Draws:
    """The Gaussian ingredients of :func:`_sample_block_energies`: ``z``, ``chi^2`` and ``||Z||_F^2``."""
    shape = e.shape if n_draws is None else (n_draws,) + e.shape
    z = rng.standard_normal(shape)
    chi2 = np.where(dof > 0, 2.0 * rng.standard_gamma(np.maximum(dof, 1) / 2.0, size=shape), 0.0)
    axes = tuple(range(z.ndim - 2, z.ndim))
    return z, chi2, np.sum(z * z + chi2, axis=axes, keepdims=True)


def _energies_at(e: np.ndarray, draws: _Draws, norm: float,
                 roots: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None) -> NDArray[np.float64]:
    """Perturbed block energies ``sqrt((e + s z)^2 + s^2 chi^2)``, ``s = norm / ||Z||_F``.

    ``roots``: ``(sqrt(||Z||_F^2), sqrt(chi^2))`` from :func:`_draw_roots` when the same draws
    are scaled to several levels (the same square roots, taken once). The arithmetic is
    ``hypot(s z + e, s sqrt(chi^2))`` in both cases (addition commutes exactly), with two
    temporaries instead of five.
    """
    z, chi2, zz = draws
    root_zz, root_chi2 = _draw_roots(draws) if roots is None else roots
    s = norm / root_zz
    x = s * z
    x += e
    y = s * root_chi2
    # hypot, not sqrt of squares: energies near 1e-162 would square to subnormals.
    out: NDArray[np.float64] = np.hypot(x, y, out=x)
    return out


def _draw_roots(draws: _Draws) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``sqrt(||Z||_F^2)`` and ``sqrt(chi^2)`` of :func:`_block_draws`' draws (level-independent)."""
    _, chi2, zz = draws
    return np.sqrt(zz), np.sqrt(chi2)


def _sample_block_energies(e: np.ndarray, dof: np.ndarray, norm: float, rng: np.random.Generator,
                           n_draws: int | None = None) -> np.ndarray:
    """Energies ``e_g(u; A0 + E)`` for ``E = norm * Z / ||Z||_F``, ``Z`` i.i.d. standard normal.

    Exact in distribution without forming ``E``: in each block, ``Z`` splits into its
    component ``z ~ N(0, 1)`` along ``A0``'s block and an independent orthogonal part with
    ``||Z_perp||^2 ~ chi^2(n_gu - 1)``; so ``e' = sqrt((e + s z)^2 + s^2 chi^2)`` with
    ``s = norm / ||Z||_F`` and ``||Z||_F^2 = sum (z^2 + chi^2)``. (A block with ``e = 0``
    gets ``s^2 (z^2 + chi^2(n_gu - 1)) = s^2 chi^2(n_gu)``, as it must.) With ``n_draws``,
    that many independent draws at once (leading axis).
    """
    return _energies_at(e, _block_draws(e, dof, rng, n_draws), norm)


def _changed_blocks(e: NDArray[np.float64], ref: Reference) -> NDArray[np.bool_]:
    """For a stack of perturbed block energies ``e`` (draws first), whether each changed the structure.

    The structure changes iff a support changes (then degrees, masks, SRS sets or hubs may follow)
    or, with the supports unchanged, an edge appears or disappears (``w`` against ``kappa``).
    """
    st = ref.structure
    active = e >= ref.theta[None, :, None]
    moved = np.any(active != st.active[None], axis=(1, 2))
    with np.errstate(over="ignore"):  # as in structure.pair_weights: an overflow still decides the edge
        ea = np.where(st.active[None], e, 0.0)
        ea /= ref.scale  # in place: the same quotients, one buffer fewer
        w = np.einsum("dgu,dhu->dgh", ea, ea)
    edges = (w >= ref.kappa_scaled) & (w > 0)
    n = e.shape[1]
    edges[:, np.arange(n), np.arange(n)] = False
    changed: NDArray[np.bool_] = moved | np.any(edges != st.edges[None], axis=(1, 2))
    return changed


def perturbation_tests(a0: np.ndarray, ref: Reference, rho_static: float, *, below: tuple[float, ...],
                       above: tuple[float, ...], n_draws: int, rng: np.random.Generator, where: str,
                       mode: str = "blocks") -> dict[str, Any]:
    """Random perturbations ``E`` of ``A0`` with ``||E||_F = t rho_static``, ``E`` Gaussian.

    ``mode="explicit"`` forms each ``E`` and recomputes the structure of ``A0 + E``;
    ``mode="blocks"`` (the default) draws the perturbed unit energies directly from their exact
    joint distribution (:func:`_sample_block_energies`), which is all the structure depends on,
    at ``O(groups x units)`` per draw instead of ``O(rows x cols)``; its ``n_draws`` Gaussian
    directions are drawn once and scaled to every level (common random numbers: each level on its
    own is an exact sample, and the rates across levels are compared on the same directions, which
    is seven times less random-number generation). Below the radius (t < 1) a
    change of structure contradicts the theorem and raises :class:`CertificateBugError`; above
    it the rate of change is reported.
    """
    if not rho_static > 0 or n_draws == 0:
        reason = "rho_static is zero" if not rho_static > 0 else "n_perturbations = 0"
        return {"ran": False, "reason": reason, "mode": mode, "levels": [], "below_ok": True}
    part = ref.partition
    if mode == "explicit":
        gi = part.group_indicator()
        ui = part.unit_indicator() if part.unit_strategy != "channels" else None
    else:
        e0 = ref.structure.energies
        draws = _block_draws(e0, _block_sizes(ref) - 1, rng, n_draws)
        roots = _draw_roots(draws)  # the same at every level
    levels: list[dict[str, Any]] = []
    changed_draws: NDArray[np.bool_]
    for t in tuple(below) + tuple(above):
        if mode == "explicit":
            changes: list[bool] = []
            for _ in range(n_draws):
                e = rng.standard_normal(a0.shape)
                e *= t * rho_static / np.linalg.norm(e)
                changes.append(bool(compare(ref.structure, structure_of(a0 + e, ref, gi, ui))))
            changed_draws = np.array(changes)
        else:
            changed_draws = _changed_blocks(_energies_at(e0, draws, t * rho_static, roots), ref)
        changed = int(changed_draws.sum())
        if changed and t < 1:
            raise CertificateBugError(
                f"Interface {where}: a random perturbation of norm {t} * rho_static changed the structure "
                "although the radius certifies it cannot. This is a bug in physgsa."
            )
        levels.append({"t": float(t), "draws": n_draws, "changed": changed, "rate": changed / n_draws})
    return {"ran": True, "reason": "", "mode": mode, "levels": levels, "below_ok": True}


def adversarial(a0: np.ndarray, ref: Reference, mg: Margins) -> dict[str, Any]:
    """Perturbations aimed at the binding margins, to show the radius is tight.

    (1) The unit closest to its threshold: rescale the block ``A0[G_g, u]`` so its energy lands
    just across ``theta_g``; ``||E||_F = gamma + tiny``. (2) For the pair with the smallest
    ``rho_gh``: rescale group ``g`` on the shared units so ``w_gh`` crosses ``kappa``.
    Reports each attempt and the smallest ``||E||_F`` that changed the structure.
    """
    part = ref.partition
    s0 = ref.structure
    attempts: list[dict[str, Any]] = []
    g, u = mg.gamma_at
    rows = np.flatnonzero(part.groups == g)
    cols = np.flatnonzero(part.units == u)
    e_gu = float(s0.energies[g, u])
    theta = float(ref.theta[g])
    tiny = max(1e-9 * max(mg.gamma, theta), 1e-300)
    block = a0[np.ix_(rows, cols)]
    if e_gu > 0:
        direction = block / e_gu
    else:
        direction = np.zeros_like(block)
        direction.flat[0] = 1.0
    # Active units go down to just below theta, noise units up to just above it.
    c = (theta - tiny - e_gu) if s0.active[g, u] else (theta + tiny - e_gu)
    pert = np.zeros_like(a0)
    pert[np.ix_(rows, cols)] = c * direction
    attempts.append({"target": "unit_gap", "group": int(g), "unit": int(u), "norm": fro_norm(pert),
                     "changed": compare(s0, structure_of(a0 + pert, ref))})
    # A pair whose weight is 0 (its shared units carry no energy) cannot be moved by rescaling.
    movable = [p for p in mg.pairs if p["w_scaled"] > 0]
    if movable:
        p = min(movable, key=lambda d: d["rho"])
        gg, hh = p["g"], p["h"]
        shared_units = np.flatnonzero(s0.active[gg] & s0.active[hh])
        w = p["w_scaled"]
        # w scales linearly with group g's energies on the shared units (a ratio: no units).
        t = (ref.kappa_scaled - w) / w
        t = t - abs(t) * 1e-9 - 1e-15 if w >= ref.kappa_scaled else t + abs(t) * 1e-9 + 1e-15
        rows = np.flatnonzero(part.groups == gg)
        cols = np.flatnonzero(np.isin(part.units, shared_units))
        pert = np.zeros_like(a0)
        pert[np.ix_(rows, cols)] = t * a0[np.ix_(rows, cols)]
        attempts.append({"target": "pair_overlap", "group": int(gg), "other": int(hh),
                         "norm": fro_norm(pert),
                         "changed": compare(s0, structure_of(a0 + pert, ref))})
    changed: list[float] = [a["norm"] for a in attempts if a["changed"]]
    smallest = min(changed) if changed else None
    return {
        "attempts": attempts,
        "smallest_change_norm": smallest,
        "tightness": (smallest / mg.rho_static) if (smallest is not None and mg.rho_static > 0) else None,
    }

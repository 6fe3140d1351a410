"""Predictors of a unit's task damage that need no task data (issue 23; docs/validation.md).

For each unit ``u`` of a model (:func:`physgsa.models.units.units`) and change ``c`` (int4 or int3
round-to-nearest in groups of 32 along the input axis, 50% magnitude pruning; only ``u``'s
weights change), one row of predictors:

- ``S``: the pre-registered combined score of docs/validation.md,

      S(u, c) = sum over stages s of ||P'_s - P_s||_F / ||P_s||_F,   P_s = F_{b_s} ... F_{a_s},

  a stage a maximal run of linked factors, ``P'_s`` the same product of the changed factors;
  float64, each partial product of ``P`` and ``P'`` divided by the same power of two (near
  ``max |P|``) before the next factor and before the norms (:func:`combined_score`; the ratio
  is unchanged by a common power of two, and no product overflows or underflows);
- physgsa's, from :func:`physgsa.runs.compare.compare_chains` of the base chain against every
  changed chain (one call per model: BASE's references are fitted once), over the interfaces
  and factors the change touches (a factor is touched when its matrix differs from BASE's; an
  interface when either of its factors is): ``drift_ratio_max`` / ``drift_ratio_sum``
  (``||Delta A0||_F / rho_static``), ``share_drop`` (the largest drop of the a priori graded
  certified share ``certified_share_apriori`` against BASE compared with itself),
  ``delta_rho`` / ``delta_s_hat`` (largest ``|Delta|`` over touched factors), ``angle_change``
  (largest ``1 - cos_min`` of the dominant windows, output or input side), ``supports_changed``
  (memberships gained or lost, all interfaces) and ``hubs_changed`` (hubs added or removed);
- baselines from the unit's weights alone: ``depth``, ``w_norm = ||W||_F``, ``dw_norm =
  ||Delta W||_F``, ``dw_rel`` (their ratio; over all the unit's blocks together), ``alpha``
  (WeightWatcher's power-law exponent, :mod:`physgsa.core.powerlaw`, mean over the unit's
  blocks where a fit exists) and ``outlier_channels`` (input channels of the unit's blocks
  holding more than 10 times the mean column energy, :func:`physgsa.core.outliers.outlier_columns`,
  summed over the blocks).

Factors: the static factors for CNNs (digits-resnet) and the UNet (digits-diffusion: physgsa has
no Jacobian mode for diffusers' UNet, so its attention enters through the static ``W_O W_V``
only, and this is said in the table's attributes); for GPT-2, ViT and BERT (pysource-gpt,
digits-vit, MiniLM) the Jacobian-mode factors at a fixed, seeded set of unlabeled inputs from
the training split (:func:`physgsa.models.units.training_inputs`). The DataFrame's
``attrs["uses_unlabeled_inputs"]`` names the predictors that used them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..core import powerlaw
from ..core.chain import Chain
from ..core.outliers import outlier_columns
from ..core.perturb import Change, parse_change
from ..core.validation import InvalidParameterError
from ..models import units as U
from .compare import compare_chains

__all__ = ["combined_score", "stages", "stage_products", "sensitivity", "weight_baselines", "CHANGES",
           "PHYSGSA_PREDICTORS", "BASELINES"]

#: The changes of the protocol (docs/validation.md).
CHANGES: dict[str, Change] = {
    "int4": parse_change(quantize="int4", group_size=32),
    "int3": parse_change(quantize="int3", group_size=32),
    "prune50": parse_change(prune="magnitude:0.5"),
}
PHYSGSA_PREDICTORS = ("S", "drift_ratio_max", "drift_ratio_sum", "share_drop", "delta_rho", "delta_s_hat",
                      "angle_change", "supports_changed", "hubs_changed")
BASELINES = ("depth", "w_norm", "dw_norm", "dw_rel", "alpha", "outlier_channels")


# -- the combined score -------------------------------------------------------------------------

def stages(chain: Chain) -> list[list[int]]:
    """The chain's stages: maximal runs of linked factors, each in execution order (a lone factor is one)."""
    n = len(chain.factors)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for link in chain.links:
        parent[root(link.right)] = root(link.left)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def _exp2(p: np.ndarray) -> int:
    """The exponent ``e`` with ``max|p| = m 2^e``, ``m`` in [0.5, 1) (0 for a zero matrix)."""
    top = float(np.max(np.abs(p))) if p.size else 0.0
    return math.frexp(top)[1] if top > 0 and math.isfinite(top) else 0


def stage_products(base: Sequence[np.ndarray], changed: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(2^-E P, 2^-E P')`` for ``P = F_b ... F_a`` (``base`` in execution order), one common ``E``.

    After each product both are divided by the same power of two, taken from ``P`` (exact in
    binary floating point), so ``||P' - P||_F / ||P||_F`` is that of the unscaled products.
    """
    p = np.asarray(base[0], dtype=np.float64)
    q = np.asarray(changed[0], dtype=np.float64)
    e = _exp2(p)
    p, q = np.ldexp(p, -e), np.ldexp(q, -e)
    for f, g in zip(base[1:], changed[1:]):
        p = np.asarray(f, dtype=np.float64) @ p
        q = np.asarray(g, dtype=np.float64) @ q
        e = _exp2(p)
        p, q = np.ldexp(p, -e), np.ldexp(q, -e)
    return p, q


def combined_score(base: Chain, changed: Chain) -> float:
    """``S = sum_s ||P'_s - P_s||_F / ||P_s||_F`` over the base chain's stages (docs/validation.md).

    ``changed`` has the same factors (names and shapes) with the change applied. A stage whose
    product is zero gives ``nan`` (no relative change is defined).
    """
    if [f.name for f in base.factors] != [f.name for f in changed.factors]:
        raise InvalidParameterError("combined_score needs two chains of the same factors.")
    total = 0.0
    for st in stages(base):
        p, q = stage_products([base.factors[i].matrix for i in st], [changed.factors[i].matrix for i in st])
        norm = float(np.linalg.norm(p))
        total += float(np.linalg.norm(q - p)) / norm if norm > 0 else math.nan
    return total


# -- baselines from the weights ------------------------------------------------------------------

def _as_matrix(b: np.ndarray) -> np.ndarray:
    """A block as (out, in): a conv block (out, in, kh, kw) as (out kh kw, in), columns = input channels."""
    return b if b.ndim == 2 else np.moveaxis(b, 1, -1).reshape(-1, b.shape[1])


def _alpha(b: np.ndarray) -> float:
    """WeightWatcher's alpha of one block (a conv block: its kernel slices pooled), nan where no fit exists."""
    if not np.any(b):
        return math.nan
    if b.ndim == 2:
        sigma = np.linalg.svd(b, compute_uv=False)
        a = powerlaw.weight_metrics(sigma, b.shape)["alpha"]
    else:
        ww = powerlaw.conv2d_layer(b)
        assert ww.slices is not None  # conv2d_layer gives a kernel's slices unless told they are the row's
        en = powerlaw.pool([powerlaw.energies(np.ascontiguousarray(s)) for s in ww.slices], ww.scale)
        a = powerlaw.ww_metrics(en, ww.N)["alpha"]
    return math.nan if a is None else float(a)


def weight_baselines(blocks: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """``w_norm``, ``dw_norm``, ``dw_rel``, ``alpha`` and ``outlier_channels`` of a unit's blocks ``(W, W')``."""
    w2 = sum(float(np.sum(w * w)) for w, _ in blocks)
    d2 = sum(float(np.sum((w2_ - w) ** 2)) for w, w2_ in blocks)
    alphas = [a for a in (_alpha(w) for w, _ in blocks) if math.isfinite(a)]
    return {"w_norm": math.sqrt(w2), "dw_norm": math.sqrt(d2),
            "dw_rel": math.sqrt(d2 / w2) if w2 > 0 else math.nan,
            "alpha": float(np.mean(alphas)) if alphas else math.nan,
            "outlier_channels": int(sum(outlier_columns(_as_matrix(w)).size for w, _ in blocks))}


# -- physgsa's, from compare ---------------------------------------------------------------------

def _touched(base: Chain, other: Chain) -> list[int]:
    return [i for i, (fb, fo) in enumerate(zip(base.factors, other.factors))
            if not np.array_equal(fb.matrix, fo.matrix)]


def _nanmax(values) -> float:
    vals = [float(v) for v in values if v is not None and not pd.isna(v)]
    return max(vals) if vals else math.nan


def _from_compare(res, label: str, base: Chain, other: Chain, base_share: dict[str, float]) -> dict:
    touched = _touched(base, other)
    names = {base.factors[i].name for i in touched}
    ifs = res.interfaces[res.interfaces["other"] == label]
    link_names = {k.name(base) for k in base.links
                  if base.factors[k.left].name in names or base.factors[k.right].name in names}
    hit = ifs[ifs["interface"].isin(link_names)]
    ratios = [float(r) for r in hit["ratio"] if not pd.isna(r)]
    drops = [base_share[w] - float(s) for w, s in zip(hit["interface"], hit["certified_share_apriori"])
             if not pd.isna(s) and not math.isnan(base_share.get(w, math.nan))]
    fac = res.factors[(res.factors["other"] == label) & res.factors["factor"].isin(names)]
    supports = hubs = 0
    for d in res.document["interfaces"]:
        if d["other"] != label:
            continue
        ch = d["changes"]
        supports += sum(len(v) for v in ch["supports_gained"].values()) + sum(len(v) for v in
                                                                             ch["supports_lost"].values())
        hubs += len(ch["hubs_added"]) + len(ch["hubs_removed"])
    return {
        "drift_ratio_max": max(ratios) if ratios else (0.0 if not touched else math.nan),
        "drift_ratio_sum": float(sum(ratios)),
        "share_drop": max(drops) if drops else (0.0 if not touched else math.nan),
        "delta_rho": _nanmax(abs(v) for v in fac["delta_rho"]) if len(fac) else 0.0,
        "delta_s_hat": _nanmax(abs(v) for v in fac["delta_s_hat"]) if len(fac) else 0.0,
        "angle_change": _nanmax(1.0 - min(a, b) for a, b in zip(fac["cos_min_out"], fac["cos_min_in"]))
        if len(fac) else 0.0,
        "supports_changed": supports, "hubs_changed": hubs, "n_touched_factors": len(touched),
    }


# -- the table -----------------------------------------------------------------------------------

def sensitivity(model, *, changes: dict[str, Change] | None = None, unit_list: Sequence[U.Unit] | None = None,
                module=None, inputs: list[dict] | None = None, what: str = "the given inputs", n_inputs: int = 4,
                seed: int = 0, **compare_params) -> pd.DataFrame:
    """One row per (unit, change): the combined score, physgsa's predictors and the baselines.

    Parameters
    ----------
    model : str, WeightSource or nn.Module
        A bundled name or a model :func:`physgsa.models.units.units` reads.
    changes : dict of label -> Change, optional
        Default :data:`CHANGES` (int4 and int3 in groups of 32, 50% magnitude pruning).
    unit_list : sequence of Unit, optional
        Default every unit of the model.
    module, inputs, what
        For a GPT-2, ViT or BERT: the nn.Module and the Jacobian inputs (model inputs of one
        sequence each). A bundled name needs neither: its trained module and
        :func:`~physgsa.models.units.training_inputs` (``n_inputs``, ``seed``) are used.
    **compare_params
        Passed to :func:`physgsa.runs.compare.compare_chains`.

    Returns
    -------
    DataFrame
        Columns ``model, unit, kind, depth, change``, the predictors of :data:`PHYSGSA_PREDICTORS`
        and :data:`BASELINES`, and ``n_touched_factors``. ``attrs``: ``factors`` (static or
        Jacobian, and at which inputs) and ``uses_unlabeled_inputs`` (predictor -> bool).
    """
    changes = dict(CHANGES if changes is None else changes)
    src = U.weight_source(model)
    arch = U.architecture(src)
    jacobian = arch in U.ATTENTION_ARCHS
    if jacobian:
        if module is None:
            if not isinstance(model, str):
                module = model if hasattr(model, "state_dict") else None
            else:
                module = U.bundled_module(model)
        if module is None:
            raise InvalidParameterError(f"{src.name}: Jacobian-mode factors need the nn.Module (module=).")
        if inputs is None:
            if not isinstance(model, str):
                raise InvalidParameterError(f"{src.name}: Jacobian-mode factors need inputs (inputs=).")
            inputs, what = U.training_inputs(model, n=n_inputs, seed=seed)
    kw = dict(model=module, inputs=inputs, what=what) if jacobian else {}
    name = model if isinstance(model, str) else src.name
    found = list(U.units(src) if unit_list is None else unit_list)
    base = U.factor_chain(src, **kw)
    others, meta = [("base", base)], []
    for u in found:
        for label, change in changes.items():
            other = U.factor_chain(src, u, change, base=base if jacobian else None, **kw)
            others.append((f"{u.name}|{label}", other))
            meta.append((u, label, change, other))
    res = compare_chains(base, others, **compare_params)
    own = res.interfaces[res.interfaces["other"] == "base"]
    base_share = {w: (math.nan if pd.isna(s) else float(s))
                  for w, s in zip(own["interface"], own["certified_share_apriori"])}
    rows = []
    for u, label, change, other in meta:
        row = {"model": name, "unit": u.name, "kind": u.kind, "depth": u.depth, "change": label,
               "S": combined_score(base, other)}
        row.update(_from_compare(res, f"{u.name}|{label}", base, other, base_share))
        row.update(weight_baselines(U.unit_matrices(src, u, change)))
        rows.append(row)
    cols = ["model", "unit", "kind", "depth", "change", *PHYSGSA_PREDICTORS, *BASELINES[1:], "n_touched_factors"]
    df = pd.DataFrame(rows, columns=cols)
    df.attrs["factors"] = f"Jacobian mode at {what}" if jacobian else "static"
    df.attrs["uses_unlabeled_inputs"] = {c: (jacobian and c in PHYSGSA_PREDICTORS) for c in
                                         (*PHYSGSA_PREDICTORS, *BASELINES)}
    return df

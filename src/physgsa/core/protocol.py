"""The margin protocol (definitions section 7): membership in the certificate domain.

Each interface gets the twelve items, each with its value and verdict; an interface is a
member iff every item passes. The model-level verdict gives the fraction of members and
lists every failed item.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .certificate import Margins
from .spectra import Spectrum
from .transport import Rigidity, Transport

__all__ = ["interface_items", "model_verdict", "ITEM_NAMES"]

ITEM_NAMES = {
    1: "float64 throughout, numerical rank recorded",
    2: "normalization exact",
    3: "window gaps above their floor",
    4: "chart quality recorded",
    5: "slack >= 0 and drift bound holds",
    6: "exact truncation error <= its bound",
    7: "decomposition orthogonal and energy-closed",
    8: "gamma > 0 and every mu_gh > 0",
    9: "a priori and measured verdicts",
    10: "direct check agrees",
    11: "perturbation tests pass below the radius",
    12: "ICM labels certified",
}


def _item(i: int, passed: bool, value: dict[str, Any]) -> dict[str, Any]:
    return {"item": i, "name": ITEM_NAMES[i], "passed": bool(passed), "value": value}


def interface_items(*, left: Spectrum, right: Spectrum, a0_dtype: np.dtype[Any], gap_floor: float, rig: Rigidity,
                    tr: Transport, decomp: dict[str, Any], mg: Margins, ver: dict[str, Any], direct_diff: list[str],
                    pert: dict[str, Any], icm_fraction: dict[str, Any], icm_all: bool) -> list[dict[str, Any]]:
    """The twelve protocol items of one interface (see ITEM_NAMES)."""
    norm_err = [abs(s.fro2_hat - s.r) / s.r for s in (left, right)]
    chart_q: dict[str, list[float | None]] = {
        "window_r2": [s.window_r2 for s in (left, right)],
        "hellinger": [s.hellinger for s in (left, right)],
        "tail_error": [s.tail_error for s in (left, right)],
    }
    recorded = all(v is not None and np.isfinite(v) for v in chart_q["hellinger"] + chart_q["tail_error"])
    return [
        _item(1, a0_dtype == np.float64 and left.a_hat.dtype == np.float64 and right.a_hat.dtype == np.float64,
              {"dtype": str(a0_dtype), "numerical_rank": [left.numerical_rank, right.numerical_rank]}),
        _item(2, max(norm_err) <= 1e-10, {"relative_error": norm_err}),
        _item(3, min(left.window_gap, right.window_gap) >= gap_floor,
              {"gaps": [left.window_gap, right.window_gap], "floor": gap_floor}),
        _item(4, recorded, chart_q),
        _item(5, (rig.slack is None or rig.slack >= -1e-9) and rig.drift_holds,
              {"slack": rig.slack, "drift": rig.drift, "drift_bound": rig.drift_bound}),
        _item(6, tr.trunc_error <= tr.trunc_bound * (1 + 1e-10) + 1e-300,
              {"trunc_error": tr.trunc_error, "trunc_bound": tr.trunc_bound}),
        _item(7, decomp["closure"] <= 1e-12 and decomp["orthogonality"] <= 1e-12
              and decomp.get("block_closure", 0.0) <= 1e-10,
              {"closure": decomp["closure"], "orthogonality": decomp["orthogonality"],
               "block_closure": decomp.get("block_closure")}),
        _item(8, mg.gamma > 0 and (mg.mu_min_scaled is None or mg.mu_min_scaled > 0),
              {"gamma": mg.gamma, "mu_min": mg.mu_min}),
        _item(9, ver["a_priori"] and ver["measured"],
              {"a_priori": ver["a_priori"], "measured": ver["measured"], "eps_trunc": tr.eps_trunc,
               "trunc_error": tr.trunc_error, "rho_static": mg.rho_static}),
        _item(10, not direct_diff, {"differs": direct_diff}),
        _item(11, pert["below_ok"] and pert["ran"], {"ran": pert["ran"], "reason": pert["reason"]}),
        _item(12, icm_all, {"certified_fraction": icm_fraction}),
    ]


def model_verdict(names: list[str], items: list[list[dict[str, Any]]], n_breaks: int,
                  margins: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Fraction of member interfaces, every failed item, and the smallest margins.

    ``margins`` holds, per interface, ``rho_static``, its binding margin and the ratios
    ``eps_trunc / (safety rho_static)`` and ``||E||_F / rho_static``; the five interfaces with the
    smallest radius are listed first thing, so a reader sees what failed and by how much.
    """
    failed: list[dict[str, Any]] = []
    members = 0
    for name, its in zip(names, items):
        bad = [it for it in its if not it["passed"]]
        members += not bad
        failed += [{"interface": name, "item": it["item"], "name": it["name"]} for it in bad]
    n = len(names)
    trivial = [d["interface"] for d in (margins or []) if d.get("no_channel_structure")]
    graded = _graded_verdict(margins or [])
    if n == 0:
        summary = "no interfaces"
    elif members == n:
        summary = "all interfaces are members"
    elif members == 0:
        summary = "no interface is a member"
    else:
        summary = f"{members} of {n} interfaces are members"
    return {
        "n_interfaces": n,
        "n_members": members,
        "member_fraction": (members / n) if n else None,
        "n_chain_breaks": n_breaks,
        # Interfaces whose structure is trivial (a group with every unit active, every unit a
        # hub, or no core energy): certified or not, they show no channel structure.
        "n_no_channel_structure": len(trivial),
        "no_channel_structure": trivial,
        "summary": summary,
        "smallest_margins": [{k: v for k, v in d.items() if k not in ("no_channel_structure", "graded")} for d in
                             sorted(margins or [], key=lambda d: (d["rho_static"], d["interface"]))[:5]],
        "graded": graded,
        "failed": failed,
    }


def _graded_verdict(margins: list[dict[str, Any]]) -> dict[str, Any]:
    """Each interface's a priori and measured certified membership shares, and the model's.

    The model's share weights each interface by its ``||A0||_F^2`` (definitions section 5b): the
    share of all the routing energy, over every interface, whose membership is certified.
    Interfaces with a zero A0 (share None) carry no weight.
    """
    per = [{"interface": d["interface"], "apriori": d["graded"]["apriori"], "measured": d["graded"]["measured"]}
           for d in margins if "graded" in d]
    out: dict[str, Any] = {"interfaces": per}
    for how in ("apriori", "measured"):
        pairs = [(d["graded"][how], d["graded"]["energy"]) for d in margins
                 if "graded" in d and d["graded"][how] is not None and d["graded"]["energy"] > 0]
        total = sum(w for _, w in pairs)
        out[how] = (sum(x * w for x, w in pairs) / total) if total > 0 else None
    return out

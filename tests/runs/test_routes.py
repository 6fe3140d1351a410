"""certify's numerical routes (issue 25): the same structure where margins exceed the bound, and
the same bytes run after run.

The fast route computes the section 8 commutator from the SVDs and reads the transport's thin
blocks of ``C = V'^T U`` from the whole ``C`` it forms for that; the reference route forms the
commutator from the factors' products and the thin blocks on their own. The two differ in the last
bits only. Wherever an interface's smallest structural margin (``rho_static``, every membership
and pair margin) exceeds the rounding allowance that covers those bits, every support, mask, hub,
edge, group and verdict must be the same; the commutators must agree within their two bounds.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from physgsa import Chain, certify, save

STRUCTURE = ("supports", "exclusive", "hubs", "group_sizes")


def chain_of(kind: str, seed: int) -> Chain:
    rng = np.random.default_rng(seed)
    if kind == "residual":  # near-identity, square: the fast route's commutator everywhere
        mats = [np.eye(40) + 0.6 * rng.standard_normal((40, 40)) / np.sqrt(40) for _ in range(4)]
    elif kind == "rectangular":  # 30 -> 50 -> 20 -> 30: square frames on some sides only
        shapes = [(50, 30), (20, 50), (30, 20), (30, 30)]
        mats = [rng.standard_normal(s) for s in shapes]
    else:  # "cliff": a power-law spectrum with a sharp cliff in shared frames (small margins)
        u = np.linalg.qr(rng.standard_normal((32, 32)))[0]
        s = np.r_[np.ones(8), 1e-6 * np.ones(24)]
        mats = [(u * s) @ u.T + 1e-3 * rng.standard_normal((32, 32)) for _ in range(3)]
    return Chain.from_arrays([(f"blocks.{i}", m) for i, m in enumerate(mats)])


def digest(out: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind,seed", [("residual", 0), ("residual", 1), ("rectangular", 2), ("cliff", 3)])
def test_routes_give_the_same_structure_where_the_margins_exceed_the_bound(kind, seed, tmp_path):
    ch = chain_of(kind, seed)
    docs = {}
    for route in ("fast", "reference"):
        save(certify(ch, route=route, n_perturbations=4), tmp_path / route)
        docs[route] = json.loads((tmp_path / route / "certificate.json").read_text())
    assert docs["fast"]["parameters"]["route"] == "fast"
    assert docs["fast"]["routes"]["block_norms"] == "gram" and docs["reference"]["routes"]["block_norms"] == "svd"
    assert docs["reference"]["routes"]["commutator"]["frames"] == 0
    routes, checked = set(), 0
    for fast, ref in zip(docs["fast"]["interfaces"], docs["reference"]["interfaces"], strict=True):
        fa, ra = fast["alignment"], ref["alignment"]
        routes.add(fa["commutator_route"])
        assert ra["commutator_route"] == "direct"
        assert abs(fa["commutator"] - ra["commutator"]) <= fa["commutator_bound"] + ra["commutator_bound"]
        # The fast route's allowance carries its Gram SVDs' measured error levels: never below gesdd's.
        allowance = fast["verdicts"]["rounding_allowance"]
        assert allowance >= ref["verdicts"]["rounding_allowance"]
        shape = {f.name: f.shape for f in ch.factors}
        ranks = [min(shape[fast[side]]) for side in ("left", "right")]
        assert allowance == 4 * max(fast["svd"]["omega"]) * np.sqrt(ranks[0] * ranks[1])
        rho = ref["margins"]["rho_static"]
        if rho is not None and rho > 2 * allowance:
            checked += 1
            for key in STRUCTURE:
                assert fast["structure"][key] == ref["structure"][key], key
            assert fast["structure"]["theta"] == pytest.approx(ref["structure"]["theta"], rel=1e-9)
            edges = [[(e["g"], e["h"], e["shared"]) for e in d["structure"]["edges"]] for d in (fast, ref)]
            assert edges[0] == edges[1]
            for key in ("a_priori", "measured", "direct_same"):
                assert fast["verdicts"][key] == ref["verdicts"][key], key
            for key, value in ref["graded"]["apriori"].items():
                assert fast["graded"]["apriori"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
            assert fast["member"] == ref["member"]
    assert checked >= 1  # the comparison is never vacuous on these chains
    square = {"residual": {"frames"}, "rectangular": {"frames", "direct"}, "cliff": {"frames"}}[kind]
    assert routes == square
    # The factors' SVDs: the Gram route on the well-conditioned chains, gesdd on the cliff (its
    # sigma_1 / sigma_r is 1e6); the counts are the interfaces' own.
    svd = docs["fast"]["routes"]["svd"]
    n_factors = len(docs["fast"]["factors"])
    assert svd["gram"] + svd["gesdd"] == n_factors and docs["reference"]["routes"]["svd"]["gesdd"] == n_factors
    want = {"residual": range(n_factors, n_factors + 1), "rectangular": range(1, n_factors + 1),
            "cliff": range(0, 1)}[kind]
    assert svd["gram"] in want
    sides = {(i[side], r) for i in docs["fast"]["interfaces"] for side, r in zip(("left", "right"), i["svd"]["routes"])}
    assert sorted(r for _, r in sides).count("gram") == svd["gram"]
    counts = docs["fast"]["routes"]["commutator"]
    taken = [i["alignment"]["commutator_route"] for i in docs["fast"]["interfaces"]]
    assert counts == {"frames": taken.count("frames"), "direct": taken.count("direct")}


@pytest.mark.parametrize("route", ["fast", "reference"])
def test_each_route_gives_the_same_bytes_twice(route, tmp_path):
    ch = chain_of("residual", 7)
    for run in ("one", "two"):
        save(certify(ch, route=route, n_perturbations=4), tmp_path / run)
    one, two = digest(tmp_path / "one"), digest(tmp_path / "two")
    assert one == two and "certificate.json" in one

"""The combined score S of docs/validation.md and the per-unit predictors (issue 23).

S is checked against a brute-force numpy product and a known answer; the predictor table on a
tiny GPT-2 (Jacobian factors) and, marked integration, on the bundled digits-resnet (static).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from physgsa.core.chain import Chain, Factor
from physgsa.core.perturb import parse_change
from physgsa.runs.sensitivity import BASELINES, PHYSGSA_PREDICTORS, combined_score, stages, weight_baselines


def _chain(mats, links=None):
    return Chain.from_factors([Factor(name=f"f{i}", matrix=np.asarray(m, dtype=np.float64))
                               for i, m in enumerate(mats)], links=links)


def _brute(base, changed, runs):
    total = 0.0
    for run in runs:
        p = np.linalg.multi_dot([base[i] for i in reversed(run)]) if len(run) > 1 else base[run[0]]
        q = np.linalg.multi_dot([changed[i] for i in reversed(run)]) if len(run) > 1 else changed[run[0]]
        total += np.sqrt(((q - p) ** 2).sum()) / np.sqrt((p ** 2).sum())
    return total


def test_S_of_a_two_factor_identity_chain_is_the_relative_change_of_the_factor():
    n = 5
    e = np.random.default_rng(0).standard_normal((n, n)) * 1e-3
    base = _chain([np.eye(n), np.eye(n)])
    changed = _chain([np.eye(n), np.eye(n) + e])
    # P = I I, P' = (I + E) I: S = ||E||_F / ||I||_F = ||E||_F / sqrt(n)
    assert combined_score(base, changed) == pytest.approx(np.sqrt((e ** 2).sum()) / np.sqrt(n), rel=1e-13)
    assert combined_score(base, base) == 0.0


def test_S_against_a_brute_force_product_with_a_break():
    rng = np.random.default_rng(1)
    shapes = [(4, 3), (5, 4), (5, 5), (2, 6), (6, 2)]  # 5x5 -> 2x6 does not meet: a break, two stages
    base = [rng.standard_normal(s) for s in shapes]
    changed = [m.copy() for m in base]
    changed[1] += 0.01 * rng.standard_normal(shapes[1])
    changed[4] += 0.02 * rng.standard_normal(shapes[4])
    cb, cc = _chain(base), _chain(changed)
    assert stages(cb) == [[0, 1, 2], [3, 4]]
    assert combined_score(cb, cc) == pytest.approx(_brute(base, changed, [[0, 1, 2], [3, 4]]), rel=1e-12)


def test_S_scales_by_powers_of_two_and_survives_products_beyond_float64():
    rng = np.random.default_rng(2)
    small = [rng.standard_normal((4, 4)) for _ in range(6)]
    moved = [m + 0.01 * rng.standard_normal((4, 4)) * (i == 3) for i, m in enumerate(small)]
    expected = _brute(small, moved, [list(range(6))])
    big = 1e100  # the unscaled product of six such factors is ~1e600: inf in float64
    got = combined_score(_chain([m * big for m in small]), _chain([m * big for m in moved]))
    assert math.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-12)


def test_weight_baselines_by_hand():
    w = np.zeros((4, 40))
    w[:, 0] = 10.0  # one input channel with all the energy: p_0 = 1 > 10 / 40
    w[:, 1:] = 0.1
    w2 = w.copy()
    w2[0, 0] = 9.0
    b = weight_baselines([(w, w2)])
    assert b["w_norm"] == pytest.approx(np.sqrt((w ** 2).sum()))
    assert b["dw_norm"] == pytest.approx(1.0)
    assert b["dw_rel"] == pytest.approx(1.0 / np.sqrt((w ** 2).sum()))
    assert b["outlier_channels"] == 1
    # a conv block (out, in, kh, kw): its input channels are the columns counted
    k = np.full((3, 40, 3, 3), 0.1)
    k[:, 5] = 5.0
    assert weight_baselines([(k, k)])["outlier_channels"] == 1


# -- the table, Jacobian mode on a tiny GPT-2 ---------------------------------------------------

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny():
    from physgsa.models import units as U
    from physgsa.runs.sensitivity import sensitivity
    from torch_helpers import tiny_gpt2

    model, inputs = tiny_gpt2()
    pick = [u for u in U.units(model) if u.name in ("layer0.k", "layer1.head1", "layer1.mlp0")]
    changes = {"int3": parse_change(quantize="int3", group_size=32), "none": parse_change(prune="magnitude:0")}
    df = sensitivity(model, unit_list=pick, changes=changes, inputs=inputs, what="8 seeded ids")
    return model, inputs, pick, changes, df


def test_the_table_has_one_row_per_unit_and_change_and_says_what_used_inputs(tiny):
    _, _, pick, changes, df = tiny
    assert len(df) == len(pick) * len(changes)
    for col in (*PHYSGSA_PREDICTORS, *BASELINES):
        assert col in df.columns
    used = df.attrs["uses_unlabeled_inputs"]
    assert all(used[c] for c in PHYSGSA_PREDICTORS) and not any(used[c] for c in BASELINES)
    assert "8 seeded ids" in df.attrs["factors"]


def test_a_change_that_changes_nothing_predicts_nothing(tiny):
    _, _, _, _, df = tiny
    none = df[df["change"] == "none"]
    for col in ("S", "drift_ratio_max", "drift_ratio_sum", "share_drop", "delta_rho", "delta_s_hat", "angle_change",
                "dw_norm", "dw_rel", "supports_changed", "hubs_changed", "n_touched_factors"):
        assert (none[col] == 0).all(), col


def test_S_in_the_table_is_the_brute_force_product_of_the_jacobian_factors(tiny):
    from physgsa.models import units as U

    model, inputs, pick, changes, df = tiny
    base = U.factor_chain(model, model=model, inputs=inputs)
    for u in pick:
        other = U.factor_chain(model, u, changes["int3"], model=model, inputs=inputs)
        expected = _brute([f.matrix for f in base.factors], [f.matrix for f in other.factors],
                          [list(range(len(base.factors)))])
        row = df[(df["unit"] == u.name) & (df["change"] == "int3")].iloc[0]
        assert row["S"] == pytest.approx(expected, rel=1e-9)
        assert row["S"] > 0  # the key projection too: the Jacobian factors contain the softmax
        assert row["depth"] == u.depth
        # ||Delta W||_F of the unit's blocks, by hand from the stored weights
        src = U.weight_source(model)
        new = U.changed_weights(src, u, changes["int3"])
        d2 = sum(float(((v - src.get(k)) ** 2).sum()) for k, v in new.items())
        assert row["dw_norm"] == pytest.approx(np.sqrt(d2), rel=1e-12)


# -- integration: the bundled digits-resnet, static factors ------------------------------------

def test_integration_digits_resnet_static_table():
    # Integration (the real bundled digits-resnet, cached): a few seconds.
    from physgsa.models import load_chain
    from physgsa.models import units as U
    from physgsa.runs.sensitivity import sensitivity

    us = U.units("digits-resnet")
    assert len(us) >= 24
    pick = [u for u in us if u.name in ("conv1", "layer2.0.conv2", "layer3.0.channels1")]
    change = parse_change(quantize="int3", group_size=32)
    df = sensitivity("digits-resnet", unit_list=pick, changes={"int3": change})
    assert df.attrs["factors"] == "static" and not any(df.attrs["uses_unlabeled_inputs"].values())
    stem = df[df["unit"] == "conv1"].iloc[0]
    assert stem["S"] == 0 and stem["n_touched_factors"] == 0  # the stem is outside the chain of blocks
    base = load_chain("digits-resnet")
    for u in pick[1:]:
        other = load_chain(U.unit_source("digits-resnet", u, change))
        runs = stages(base)
        expected = _brute([f.matrix for f in base.factors], [f.matrix for f in other.factors], runs)
        row = df[df["unit"] == u.name].iloc[0]
        assert row["S"] == pytest.approx(expected, rel=1e-9) and row["S"] > 0
        assert row["n_touched_factors"] == 1

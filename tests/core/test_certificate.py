"""The static certificate (definitions section 5) and the ICM labels (section 6)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_structure import make_reference, references

from physgsa.core.certificate import adversarial, margins, perturbation_tests, verdicts
from physgsa.core.icm import icm_rows
from physgsa.core.spectra import normalize
from properties import check_radius, icm_corr_bound, icm_sqrt_fraction_bound
from strategies import KINDS, build


@settings(max_examples=100)
@given(ref=references(), seed=st.integers(0, 2**31 - 1))
def test_radius_is_sound(ref, seed):
    a0, r = ref
    check_radius(a0, r, np.random.default_rng(seed), 12)
    # Both perturbation-test modes raise CertificateBugError if the structure changes below the radius.
    mg = margins(r)
    for mode in ("explicit", "blocks"):
        perturbation_tests(a0, r, mg.rho_static, below=(0.5, 0.999), above=(), n_draws=6,
                           rng=np.random.default_rng(seed), where="t", mode=mode)


def test_radius_soundness_sweep_counts_at_least_1000_draws():
    # A deterministic sweep over every matrix kind: at least 1000 perturbations below the radius.
    done = 0
    seed = 0
    while done < 1200:
        kind = KINDS[seed % len(KINDS)]
        a0 = normalize(build(4 + seed % 9, 3 + seed % 7, kind, seed))[0]
        ref = make_reference(a0, n_groups=1 + seed % 4, threshold=("gap", "relative")[seed % 2], seed=seed)
        done += check_radius(a0, ref, np.random.default_rng(seed), 20)
        seed += 1
    assert done >= 1000


def test_pair_radius_is_positive_root():
    rng = np.random.default_rng(0)
    a0 = np.abs(rng.standard_normal((10, 8))) + 0.1
    ref = make_reference(a0, n_groups=3)
    mg = margins(ref)
    for p in mg.pairs:
        x = p["rho"]
        assert p["n"] * x * x + p["b"] * x == pytest.approx(p["mu"], rel=1e-12, abs=1e-15)
        assert x >= 0
    assert mg.rho_static == pytest.approx(min([mg.gamma] + [p["rho"] for p in mg.pairs]))
    assert np.all(mg.noise_margin >= mg.gamma_g - 1e-15)


@given(ref=references())
def test_adversarial_perturbation_shows_the_radius_is_tight(ref):
    a0, r = ref
    mg = margins(r)
    adv = adversarial(a0, r, mg)
    unit = adv["attempts"][0]
    if r.theta[mg.gamma_at[0]] == 0:
        # A group of zero energies: theta = 0 keeps every unit active (e >= 0), none can cross.
        return
    # Aimed at the closest unit, it changes the structure at gamma (plus a hair of 1e-9 theta,
    # the step across: with gamma = 0, e.g. a group of equal energies, that hair is all there is).
    assert unit["changed"]
    hair = 1e-9 * max(mg.gamma, float(r.theta[mg.gamma_at[0]]))
    assert mg.gamma * (1 - 1e-6) - 1e-12 <= unit["norm"] <= (mg.gamma + hair) * (1 + 1e-6) + 1e-12
    if adv["smallest_change_norm"] is not None:
        assert adv["smallest_change_norm"] >= mg.rho_static * (1 - 1e-9)


def test_random_perturbation_tests_report_rates():
    rng = np.random.default_rng(1)
    a0 = rng.standard_normal((12, 9))
    ref = make_reference(a0, n_groups=3)
    mg = margins(ref)
    out = perturbation_tests(a0, ref, mg.rho_static, below=(0.25, 0.5, 0.9), above=(1.1, 4.0), n_draws=10,
                             rng=np.random.default_rng(0), where="t")
    assert out["ran"] and [lv["t"] for lv in out["levels"]] == [0.25, 0.5, 0.9, 1.1, 4.0]
    assert all(lv["changed"] == 0 for lv in out["levels"][:3])
    zero = perturbation_tests(a0, ref, 0.0, below=(0.5,), above=(2.0,), n_draws=3, rng=rng, where="t")
    assert not zero["ran"] and zero["reason"] == "rho_static is zero"


@pytest.mark.parametrize("units", ["channels", "heads"])
def test_block_sampling_matches_explicit_perturbations_in_distribution(units):
    # The blocks sampler draws e_g(u; A0 + E) from its exact law; compare rates of change above
    # the radius with explicit Gaussian perturbations (binomial standard error ~0.011 here).
    from physgsa.core.certificate import _block_sizes, _sample_block_energies

    rng = np.random.default_rng(11)
    a0 = np.abs(rng.standard_normal((14, 10))) * (rng.random((14, 10)) < 0.6)
    heads = np.arange(10) // 2 if units == "heads" else None
    ref = make_reference(a0, n_groups=3, heads=heads)
    mg = margins(ref)
    lv = dict(below=(), above=(1.5, 3.0), n_draws=1500, where="t")
    ex = perturbation_tests(a0, ref, mg.rho_static, rng=np.random.default_rng(1), mode="explicit", **lv)
    bl = perturbation_tests(a0, ref, mg.rho_static, rng=np.random.default_rng(2), mode="blocks", **lv)
    for a, b in zip(ex["levels"], bl["levels"]):
        assert abs(a["rate"] - b["rate"]) < 0.06, (a, b)
    # Moments of one block's perturbed energy against explicit draws.
    e0 = ref.structure.energies
    dof = _block_sizes(ref) - 1
    draws = np.array([_sample_block_energies(e0, dof, 2.0, np.random.default_rng(i)) for i in range(3000)])
    from physgsa.core.structure import unit_energies

    explicit = []
    g = np.random.default_rng(5)
    for _ in range(3000):
        e = g.standard_normal(a0.shape)
        explicit.append(unit_energies(a0 + 2.0 * e / np.linalg.norm(e), ref.partition))
    explicit = np.array(explicit)
    assert np.allclose(draws.mean(axis=0), explicit.mean(axis=0), atol=0.03)
    assert np.allclose(draws.std(axis=0), explicit.std(axis=0), atol=0.03)


def test_verdicts():
    v = verdicts(1.0, 0.8, 0.5, 0.9)
    assert v["a_priori"] and v["measured"]
    v = verdicts(1.0, 0.95, 1.0, 0.9)
    assert not v["a_priori"] and not v["measured"]  # strict at the radius
    v = verdicts(0.0, 0.0, 0.0, 0.9)
    assert not v["a_priori"] and not v["measured"]  # a zero radius certifies nothing
    v = verdicts(1.0, 0.5, 0.5, 0.9, direct_norm=0.99, rounding=1e-12)
    assert v["a_priori"] and v["measured"] and v["measured_norm"] == 0.99
    v = verdicts(1.0, 0.5, 0.5, 0.9, direct_norm=0.999999999999, rounding=1e-11)
    assert not v["measured"]  # within the rounding allowance of the radius


@given(n=st.integers(3, 40), seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-6, 10.0))
def test_icm_perturbation_inequalities(n, seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * rng.uniform(0.1, 10)
    e = rng.standard_normal(n)
    e *= scale * np.linalg.norm(x) / np.linalg.norm(e)
    mask = rng.random(n) < 0.5
    mask[0] = True
    lhs, rhs = icm_sqrt_fraction_bound(x, e, mask)
    assert lhs <= rhs * (1 + 1e-12) + 1e-15
    y = rng.standard_normal(n)
    lhs, rhs = icm_corr_bound(x, e, y)
    if np.isfinite(lhs):
        assert lhs <= rhs * (1 + 1e-12) + 1e-15


@given(ref=references(), seed=st.integers(0, 1000))
def test_icm_rows_fractions_labels_and_certificates(ref, seed):
    a0, r = ref
    rng = np.random.default_rng(seed)
    e = 1e-3 * rng.standard_normal(a0.shape)
    out = icm_rows(a0, e, r.partition, r.structure.codes, tau_e=0.5, tau_rho=0.5, interface_certified=True)
    nz = out["label"] != "zero"
    tot = out["f_core"] + out["f_overlap"] + out["f_noise"]
    assert np.allclose(tot[nz], 1.0, atol=1e-12)
    assert np.all((out["label"] == "SC") == (nz & (out["f_core"] >= 0.5)))
    sa = nz & (out["f_core"] < 0.5) & (out["kappa"] >= 0.5)
    assert np.all((out["label"] == "SA") == sa)
    # A certified label survives the perturbation: recompute on A0 + E with the same masks.
    moved = icm_rows(a0 + e, np.zeros_like(e), r.partition, r.structure.codes, tau_e=0.5, tau_rho=0.5,
                     interface_certified=True, centroid=out["centroid"])
    cert = out["certified"]
    assert np.all(moved["label"][cert] == out["label"][cert])
    none = icm_rows(a0, e, r.partition, r.structure.codes, tau_e=0.5, tau_rho=0.5, interface_certified=False)
    assert not none["certified"].any()

"""Hypothesis strategies for random and adversarial matrices.

A matrix is drawn as (shape, kind, seed) and built with a seeded numpy generator, so
hypothesis shrinks over a few integers while the matrices stay rich. Kinds:

- gaussian: i.i.d. normal entries;
- lowrank: rank 1..3 plus nothing else (exact zero singular values);
- repeated: repeated singular values (degenerate windows);
- powerlaw: singular values k^(-s/2) in random frames;
- range: entries spread over 1e-150..1e150 in one matrix;
- spike: one entry dominates;
- sparse: mostly zeros;
- identity: an identity-like matrix (flat spectrum).
"""

import numpy as np
from hypothesis import strategies as st

KINDS = ("gaussian", "lowrank", "repeated", "powerlaw", "range", "spike", "sparse", "identity")


def _frames(rng, m, n):
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return u, v


def build(m, n, kind, seed):
    rng = np.random.default_rng(seed)
    r = min(m, n)
    if kind == "gaussian":
        a = rng.standard_normal((m, n))
    elif kind == "lowrank":
        k = int(rng.integers(1, min(3, r) + 1))
        a = rng.standard_normal((m, k)) @ rng.standard_normal((k, n))
    elif kind == "repeated":
        u, v = _frames(rng, m, n)
        s = np.repeat(rng.uniform(0.5, 2.0, size=max(1, r // 3 + 1)), 3)[:r]
        s = np.sort(s)[::-1]
        a = (u[:, :r] * s) @ v[:, :r].T
    elif kind == "powerlaw":
        u, v = _frames(rng, m, n)
        s = np.arange(1, r + 1) ** (-rng.uniform(0.1, 3.0) / 2)
        a = (u[:, :r] * s) @ v[:, :r].T
    elif kind == "range":
        a = rng.standard_normal((m, n)) * 10.0 ** rng.uniform(-150, 150, size=(m, n))
    elif kind == "spike":
        a = 1e-3 * rng.standard_normal((m, n))
        a[rng.integers(m), rng.integers(n)] = 1e3
    elif kind == "sparse":
        a = rng.standard_normal((m, n)) * (rng.random((m, n)) < 0.2)
        a[rng.integers(m), rng.integers(n)] = 1.0
    else:
        a = np.eye(m, n) + 1e-3 * rng.standard_normal((m, n)) * (rng.random() < 0.5)
    return a


@st.composite
def matrices(draw, min_side=1, max_side=12, kinds=KINDS):
    m = draw(st.integers(min_side, max_side))
    n = draw(st.integers(min_side, max_side))
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**31 - 1))
    return build(m, n, kind, seed)


@st.composite
def matrix_pairs(draw, min_side=1, max_side=12, kinds=KINDS):
    """(A_l, A_{l+1}) with n_{l+1} = m_l."""
    n = draw(st.integers(min_side, max_side))
    m = draw(st.integers(min_side, max_side))
    p = draw(st.integers(min_side, max_side))
    k1 = draw(st.sampled_from(kinds))
    k2 = draw(st.sampled_from(kinds))
    s1 = draw(st.integers(0, 2**31 - 1))
    s2 = draw(st.integers(0, 2**31 - 1))
    return build(m, n, k1, s1), build(p, m, k2, s2)

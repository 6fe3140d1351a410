"""The step-function polyline of the profile figures (report/svgplot.py, issue 25).

``_step_points`` was a Python loop over every step; it is now vectorized. Its output must be the
same string, so the loop is kept here as the reference and both run on random and adversarial
steps (sub-pixel columns, ties at the lowest and highest values, unsorted x, horizontal runs).
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from physgsa.report.svgplot import _step_points, num


def loop_step_points(X, Y):
    """The pre-issue-25 implementation, point by point (the reference)."""
    pts = [(float(X[0]), float(Y[0]))]
    for i in range(1, X.shape[0]):
        pts += [(float(X[i]), float(Y[i - 1])), (float(X[i]), float(Y[i]))]
    cols = []
    for p in pts:
        if cols and round(cols[-1][0][0] * 10) == round(p[0] * 10):
            cols[-1].append(p)
        else:
            cols.append([p])
    kept = []
    for c in cols:
        ys = [y for _, y in c]
        picks = sorted({0, int(np.argmin(ys)), int(np.argmax(ys)), len(c) - 1})
        kept += [c[j] for j in picks]
    out = [p for j, p in enumerate(kept)
           if j in (0, len(kept) - 1) or not (kept[j - 1][1] == p[1] == kept[j + 1][1])]
    return " ".join(f"{num(x)},{num(y)}" for x, y in out)


# x on a grid of 0.05 px puts points exactly on the half-pixel ties of round(10 x).
XS = st.one_of(st.integers(0, 400).map(lambda i: i * 0.05), st.floats(0, 600, allow_nan=False))
YS = st.one_of(st.sampled_from([0.0, 1.0, 2.0, 250.0]), st.floats(0, 300, allow_nan=False))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(pts=st.lists(st.tuples(XS, YS), min_size=1, max_size=80), sort=st.booleans())
def test_step_points_equal_the_loop(pts, sort):
    X = np.array([p[0] for p in pts])
    Y = np.array([p[1] for p in pts])
    if sort:
        order = np.argsort(X, kind="stable")
        X, Y = X[order], Y[order]
    assert _step_points(X, Y) == loop_step_points(X, Y)


def test_step_points_known_answer():
    # Steps at x = 0, 1, 1.02 (one 0.1-px column with 1), 3: values 5, 7, 2, 2.
    # Points: (0,5) (1,5) (1,7) (1.02,7) (1.02,2) (3,2) (3,2); the column at x ~ 1 keeps its first,
    # highest, lowest and last point; the last two points are equal and (3,2) closes the run.
    got = _step_points(np.array([0.0, 1.0, 1.02, 3.0]), np.array([5.0, 7.0, 2.0, 2.0]))
    assert got == "0.0,5.0 1.0,5.0 1.0,7.0 1.0,2.0 3.0,2.0"
    assert got == loop_step_points(np.array([0.0, 1.0, 1.02, 3.0]), np.array([5.0, 7.0, 2.0, 2.0]))
    # A long flat run collapses to its two ends.
    assert _step_points(np.arange(10.0), np.ones(10)) == "0.0,1.0 9.0,1.0"

"""Shared test set-up: a fixed hypothesis profile (derandomized: the same examples every run)."""

import os
import sys

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each parallel worker computes on one thread (issue 25). Two workers whose OpenMP and BLAS
    # pools each take every core spin against each other: the plan tests took 151 s instead of
    # 60 s. Set before numpy or torch load their thread pools; subprocesses inherit it.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"
    _early = sorted({"numpy", "torch"} & set(sys.modules))
    assert not _early, f"{_early} loaded before tests/conftest.py could pin the worker's threads"

from hypothesis import HealthCheck, settings  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

settings.register_profile(
    "physgsa",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("physgsa")

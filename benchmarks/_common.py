"""Helpers every benchmark script shares: thread pinning and writing the JSON record."""

from __future__ import annotations

import json
import os

__all__ = ["pin_threads", "emit", "residual_factors"]


def pin_threads(n: int) -> None:
    """Pin BLAS and OpenMP threads; call before numpy (or torch) is imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        os.environ[var] = str(n)


def emit(out: dict, path: str = "") -> None:
    """Print the record as JSON, and write it to ``path`` when one is given."""
    text = json.dumps(out, indent=2, sort_keys=True)
    print(text)
    if path:
        with open(path, "w") as fh:
            fh.write(text + "\n")


def residual_factors(n_factors: int, n: int, seed: int = 0):
    """The benchmarks' synthetic chain, one factor at a time: ``I + R``, ``R`` a power-law
    spectrum ``3 k^-0.7`` in random orthogonal frames (seeded). Import numpy only after pinning.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    s = 3.0 * np.arange(1, n + 1) ** -0.7
    for _ in range(n_factors):
        u, _ = np.linalg.qr(rng.standard_normal((n, n)))
        v, _ = np.linalg.qr(rng.standard_normal((n, n)))
        yield np.eye(n) + (u * s) @ v.T


def ill_conditioned_factors(n_factors: int, n: int, kappa: float = 1e4, seed: int = 0):
    """Factors like trained weights' (``sigma_1 / sigma_r = kappa``, geometric spectrum, random
    orthogonal frames, seeded), which the fast route's Gram SVD refuses. Import numpy only after pinning.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    s = np.logspace(0.0, -np.log10(kappa), n)
    for _ in range(n_factors):
        u, _ = np.linalg.qr(rng.standard_normal((n, n)))
        v, _ = np.linalg.qr(rng.standard_normal((n, n)))
        yield (u * s) @ v.T


def log(msg: str, t0: float) -> None:
    """One progress line, seconds since ``t0`` first."""
    import time

    print(f"[{time.time() - t0:8.1f} s] {msg}", flush=True)


def run_models(args, run_model, summarize) -> int:
    """The driver of the per-model benchmarks (sensitivity.py, plan.py): every model of ``args.models``.

    Threads pinned to ``args.threads``; a model whose ``<out>/<model>.json`` exists is skipped unless
    ``args.overwrite``; ``run_model(name, args, t0)`` writes it. Then ``<out>/summary.json`` holds
    ``summarize(record)`` of every model's JSON found in ``<out>``.
    """
    import time

    pin_threads(args.threads)
    import torch  # after the threads are pinned

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if os.path.exists(os.path.join(args.out, f"{name}.json")) and not args.overwrite:
            log(f"{name}: result exists, skipped (--overwrite to redo)", t0)
            continue
        log(f"{name}: start", t0)
        run_model(name, args, t0)
    summary = {}
    for fn in sorted(os.listdir(args.out)):
        if fn.endswith(".json") and fn != "summary.json":
            with open(os.path.join(args.out, fn)) as fh:
                record = json.load(fh)
            summary[record["model"]] = summarize(record)
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2, sort_keys=True)
        fh.write("\n")
    log(f"summary of {', '.join(summary)} -> {os.path.join(args.out, 'summary.json')}", t0)
    return 0

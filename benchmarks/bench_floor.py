"""certify on a synthetic chain of 24 factors of 768 x 768 against the bare LAPACK floor.

The floor is numpy's SVD (gesdd, with vectors) of the same 24 matrices. Both are timed in
the same process, threads pinned (set before numpy is imported), medians over --repeats runs.

    python benchmarks/bench_floor.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import sys

from _common import emit, pin_threads, residual_factors  # noqa: E402

# numpy, torch, transformers and physgsa are imported inside the functions, after pin_threads: BLAS
# and OpenMP read their thread counts when they load (and `--help` stays fast).


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--factors", type=int, default=24)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--json", type=str, default="")
    args = ap.parse_args()
    pin_threads(args.threads)

    import time

    import numpy as np

    import physgsa

    # Residual-looking factors: I + R, R a random matrix with a power-law spectrum.
    n = args.width
    mats = list(residual_factors(args.factors, n))
    chain = physgsa.Chain.from_arrays([(f"blocks.{i}", m) for i, m in enumerate(mats)])

    def floor():
        for m in mats:
            np.linalg.svd(m, full_matrices=False)

    def pipeline():
        physgsa.certify(chain)

    times = {"floor": [], "certify": []}
    for _ in range(args.repeats):
        for name, fn in (("floor", floor), ("certify", pipeline)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {
        "factors": args.factors, "width": n, "threads": args.threads, "repeats": args.repeats,
        "median_s": med, "ratio": med["certify"] / med["floor"], "runs_s": times,
        "numpy": np.__version__, "python": sys.version.split()[0],
    }
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = [{k: d.get(k) for k in ("internal_api", "num_threads", "architecture")}
                       for d in threadpool_info()]
    except ImportError:
        pass
    emit(out, args.json)

if __name__ == "__main__":
    main()

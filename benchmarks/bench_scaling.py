"""How certify's time and memory grow with width (256 to 4096) and with depth, with fitted exponents.

    python benchmarks/bench_scaling.py --threads 1 --json benchmarks/results/scaling.json

Width: chains of 3 factors of n x n (``I + R``, power-law ``R`` in random frames), n from 256 to
4096; depth: chains of 4 to 32 factors of 512 x 512. For each, the median time of certify at its
defaults (perturbation tests included), the LAPACK floor (numpy SVD of the same matrices), and
the traced peak memory (tracemalloc counts numpy's allocations). The exponent is the
least-squares slope of log time against log n (or log depth).
"""

from __future__ import annotations

import argparse
import json
import sys

from _common import emit, pin_threads, residual_factors  # noqa: E402

# numpy, torch, transformers and physgsa are imported inside the functions, after pin_threads: BLAS
# and OpenMP read their thread counts when they load (and `--help` stays fast).


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--widths", default="256,512,1024,2048,4096")
    ap.add_argument("--depths", default="4,8,16,32")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    pin_threads(args.threads)
    import time
    import tracemalloc

    import numpy as np

    import physgsa

    def chain(n_factors, n, seed=0):
        mats = list(residual_factors(n_factors, n, seed))
        return mats, physgsa.Chain.from_arrays([(f"blocks.{i}", m) for i, m in enumerate(mats)])

    def measure(n_factors, n):
        mats, ch = chain(n_factors, n)
        t_floor, t_cert = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for m in mats:
                np.linalg.svd(m, full_matrices=False)
            t_floor.append(time.perf_counter() - t)
            t = time.perf_counter()
            physgsa.certify(ch)
            t_cert.append(time.perf_counter() - t)
        tracemalloc.start()
        physgsa.certify(ch)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        row = {"factors": n_factors, "width": n, "floor_s": float(np.median(t_floor)),
               "certify_s": float(np.median(t_cert)), "traced_peak_bytes": int(peak),
               "input_bytes": int(sum(m.nbytes for m in mats))}
        row["ratio"] = row["certify_s"] / row["floor_s"]
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    def slope(xs, ys):
        return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])

    widths = [int(w) for w in args.widths.split(",")]
    depths = [int(d) for d in args.depths.split(",")]
    by_width = [measure(3, n) for n in widths]
    by_depth = [measure(d, 512) for d in depths]
    out = {
        "threads": args.threads, "repeats": args.repeats, "by_width": by_width, "by_depth": by_depth,
        "width_exponent_certify": slope(widths, [r["certify_s"] for r in by_width]),
        "width_exponent_floor": slope(widths, [r["floor_s"] for r in by_width]),
        "width_exponent_memory": slope(widths, [r["traced_peak_bytes"] for r in by_width]),
        "depth_exponent_certify": slope(depths, [r["certify_s"] for r in by_depth]),
    }
    emit(out, args.json)


if __name__ == "__main__":
    main()

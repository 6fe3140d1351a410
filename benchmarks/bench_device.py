"""certify through torch on a GPU (`device="cuda"`) against LAPACK on the CPU, same chains, one run.

    PYTHONPATH=src python3 benchmarks/bench_device.py --threads 16 --json out.json

Chains: the synthetic 24 x 768 chain of bench_floor.py and a wider 12 x 2048 one. Times (medians
of --repeats): the LAPACK floor (numpy SVD of the factors), certify on LAPACK, the torch-CUDA
SVD floor, certify with device="cuda". Agreement: the largest relative difference of rho_static,
trunc_error and eps_trunc between the two paths, and whether every verdict is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from _common import emit, pin_threads, residual_factors  # noqa: E402

# numpy, torch, transformers and physgsa are imported inside the functions, after pin_threads: BLAS
# and OpenMP read their thread counts when they load (and `--help` stays fast).


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    pin_threads(args.threads)
    import time

    import numpy as np
    import torch

    import physgsa

    torch.set_num_threads(args.threads)
    out = {"threads": args.threads, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "torch": torch.__version__, "numpy": np.__version__, "chains": {}}
    for n_factors, n in ((24, 768), (12, 2048)):
        mats = list(residual_factors(n_factors, n))
        chain = physgsa.Chain.from_arrays([(f"blocks.{i}", m) for i, m in enumerate(mats)])

        # The timed callables take this iteration's mats and chain as defaults, so each binds its own
        # chain (not whichever one the loop variable holds when it is called).
        def cuda_floor(mats=mats):
            for m in mats:
                torch.linalg.svd(torch.from_numpy(m).cuda(), full_matrices=False)
            torch.cuda.synchronize()

        runs = {"lapack_floor": lambda mats=mats: [np.linalg.svd(m, full_matrices=False) for m in mats],
                "certify_lapack": lambda chain=chain: physgsa.certify(chain),
                "cuda_floor": cuda_floor,
                "certify_cuda": lambda chain=chain: physgsa.certify(chain, device="cuda")}
        runs["cuda_floor"]()  # warm-up: CUDA context and cuSOLVER handles
        times = {k: [] for k in runs}
        results = {}
        for _ in range(args.repeats):
            for k, fn in runs.items():
                t = time.perf_counter()
                r = fn()
                times[k].append(time.perf_counter() - t)
                if k.startswith("certify"):
                    results[k] = r
        a, b = results["certify_lapack"].interfaces, results["certify_cuda"].interfaces
        rel = {c: float(np.max(np.abs(a[c] - b[c]) / np.maximum(np.abs(a[c]), 1e-300)))
               for c in ("rho_static", "trunc_error", "eps_trunc")}
        same = {c: bool((a[c] == b[c]).all()) for c in ("certified_a_priori", "certified_measured", "direct_same",
                                                         "member")}
        med = {k: float(np.median(v)) for k, v in times.items()}
        out["chains"][f"{n_factors}x{n}"] = {"median_s": med, "runs_s": times, "max_relative_difference": rel,
                                             "same_verdicts": same,
                                             "certify_cuda_over_lapack": med["certify_cuda"] / med["certify_lapack"],
                                             "certify_lapack_over_floor": med["certify_lapack"] / med["lapack_floor"],
                                             "certify_cuda_over_cuda_floor": med["certify_cuda"] / med["cuda_floor"]}
        print(f"{n_factors}x{n}:", json.dumps({k: round(v, 3) for k, v in med.items()}), json.dumps(rel), same,
              file=sys.stderr, flush=True)
    emit(out, args.json)


if __name__ == "__main__":
    main()

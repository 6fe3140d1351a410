"""``physgsa certify FILE --out DIR`` as a user runs it, against the LAPACK SVD floor of the same factors.

The chain is bench_floor.py's: 24 factors ``I + R`` of 768 x 768, ``R`` a power-law spectrum in
random frames, saved as an .npz. The command runs in a fresh process each time (start-up,
imports, reading, hashing, every output and the report all count), with the threads pinned in
its environment. The floor is ``numpy.linalg.svd`` (gesdd, with vectors) of the same 24
matrices, in this process, on the same number of threads. Contenders alternate within one
run; the ratio is of the medians. Each route (``--routes``, default ``fast,reference``) is one
contender; every run of one contender must give the same bytes (determinism, issue 25).

    python benchmarks/bench_e2e.py --threads 1 --repeats 5 --json benchmarks/results/e2e.json

``--before DIR/src`` runs another version's command in alternation as well (for example a git
worktree of the previous release, which has no ``--route``); ``same_as_before`` says which of
the routes gave its bytes (tables, heatmaps and figures; the report lists the new parameter).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, ill_conditioned_factors, pin_threads, residual_factors  # noqa: E402

# numpy, torch, transformers and physgsa are imported inside the functions, after pin_threads: BLAS
# and OpenMP read their thread counts when they load (and `--help` stays fast).

# certificate.json records the route and the version, so it differs between contenders by design.
OUTPUTS = ("factors.parquet", "interfaces.parquet", "rows.parquet", "heads.parquet",
           "heatmaps.npz", "report.html")


def _digest(out: Path, report: bool = True) -> str:
    """SHA-256 of the outputs (``report=False``: the tables, heatmaps and figures only)."""
    h = hashlib.sha256()
    for name in OUTPUTS if report else OUTPUTS[:-1]:
        h.update((out / name).read_bytes())
    for svg in sorted((out / "figures").glob("*.svg")):
        h.update(svg.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--factors", type=int, default=24)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--chain", choices=("residual", "ill"), default="residual",
                    help="residual: I + R (the bench chain; the Gram SVD resolves); ill: sigma_1 / sigma_r = 1e4 "
                         "(trained-like; the Gram SVD refuses every factor, so the fast route must not lose to gesdd)")
    ap.add_argument("--json", type=str, default="")
    ap.add_argument("--routes", type=str, default="fast,reference", help="certify --route values to time")
    ap.add_argument("--before", type=str, default="",
                    help="a src/ folder of another version (a git worktree's): its command runs in alternation too")
    args = ap.parse_args()
    pin_threads(args.threads)

    import numpy as np

    n = args.width
    make = residual_factors if args.chain == "residual" else ill_conditioned_factors
    mats = {f"blocks.{i}": m for i, m in enumerate(make(args.factors, n))}
    tmp = Path(tempfile.mkdtemp(prefix="physgsa-e2e-"))
    chain = tmp / "chain.npz"
    np.savez(chain, **mats)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "physgsa", "certify", str(chain), "--quiet"]

    def floor():
        for m in mats.values():
            np.linalg.svd(m, full_matrices=False)

    routes = [r for r in args.routes.split(",") if r]
    times: dict[str, list[float]] = {"floor": [], **{r: [] for r in routes}}
    digests: dict[str, set[str]] = {r: set() for r in routes}
    numbers: dict[str, set[str]] = {r: set() for r in routes}
    if args.before:
        times["before"], digests["before"], numbers["before"] = [], set(), set()
        env_before = dict(env, PYTHONPATH=str(Path(args.before).resolve()))
    load = [os.getloadavg()[0]]
    for rep in range(args.repeats):
        t = time.perf_counter()
        floor()
        times["floor"].append(time.perf_counter() - t)
        # Alternate the contenders, in an order that flips every repeat.
        order = routes + (["before"] if args.before else [])
        for who in (order if rep % 2 == 0 else order[::-1]):
            out = tmp / f"{who}-{rep}"
            extra, e = (([], env_before) if who == "before" else (["--route", who], env))
            t = time.perf_counter()
            subprocess.run(cmd + extra + ["--out", str(out)], env=e, check=True)
            times[who].append(time.perf_counter() - t)
            digests[who].add(_digest(out))
            numbers[who].add(_digest(out, report=False))
    load.append(os.getloadavg()[0])
    med = {k: float(np.median(v)) for k, v in times.items()}
    emit({
        "factors": args.factors, "width": n, "chain": args.chain, "threads": args.threads, "repeats": args.repeats,
        "chain_mb": round(chain.stat().st_size / 2**20, 1),
        "median_s": med, "ratio": {k: med[k] / med["floor"] for k in med if k != "floor"},
        "before_src": args.before or None,
        "paired_ratios": {k: [c / f for c, f in zip(times[k], times["floor"])] for k in times if k != "floor"},
        "runs_s": times, "deterministic": {k: len(v) == 1 for k, v in digests.items()},
        # The report lists the parameters (--route is new), so only the tables and figures are compared.
        "same_as_before": [r for r in routes if args.before and numbers[r] == numbers["before"]],
        "load_average": load,
    }, args.json)


if __name__ == "__main__":
    main()

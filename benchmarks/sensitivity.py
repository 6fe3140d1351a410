"""Does the structure predict damage? (issue 23, docs/validation.md): the tables, from the cached models.

For each bundled model named:

1. every unit ``u`` (:func:`physgsa.models.units.units`) and change ``c``
   (:data:`physgsa.runs.sensitivity.CHANGES`): the held-out damage of the model with ``c`` applied
   to ``u``'s weights only (:func:`physgsa.models.damage.damage` of
   :func:`~physgsa.models.damage.with_weights` with :func:`~physgsa.models.units.changed_weights`,
   which are in the stored layout: the state-dict / ``named_parameters`` layout, checked per key
   below), with its bootstrap interval over examples, joined with the predictors of
   :func:`physgsa.runs.sensitivity.sensitivity` (pre-registered score ``S`` and the baselines);
2. per change, damage metric and predictor: Spearman's rho over units with its bootstrap 95%
   interval over units (:func:`physgsa.core.stats.spearman_ci`); a constant predictor (or
   constant damage) is reported as ``constant``, not a number; units where a predictor is not
   finite are left out of that row and the row says how many remain (``n``);
3. "several blocks together": per change, ``--sets`` fixed, seeded random sets of ``--set-size``
   units changed together (the same sets for every change): their damage, the joint ``S`` (the
   score of the chain with all of them changed) and the sums of the single-unit predictors.

Writes ``<out>/<model>.csv`` (one row per unit x change), ``<out>/<model>_sets.csv``,
``<out>/<model>.md`` (the tables), ``<out>/<model>.json`` (the numbers) and
``<out>/summary.json`` (every model's JSON found in ``<out>``). A model whose JSON exists is
skipped unless ``--overwrite``, so the long models can run separately. The predictors are kept in
chunks (``<out>/<model>.predictors/``), so a stopped run resumes; ``--shard I/N`` splits them
over processes (MiniLM's 396 Jacobian-mode chains take over two hours on one core):

    python benchmarks/sensitivity.py --models minilm --shard 0/2 &
    python benchmarks/sensitivity.py --models minilm --shard 1/2; wait
    python benchmarks/sensitivity.py --models minilm

    python benchmarks/sensitivity.py --models digits-resnet,digits-vit --out benchmarks/results/sensitivity

Nothing here is tuned: the score and the predictors are used exactly as runs/sensitivity.py
defines them, and the numbers are reported as measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import log, run_models  # noqa: E402

# numpy, pandas, torch and physgsa are imported inside the functions, after pin_threads.

SET_SEED = 23


def _fmt(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:+.2f}"


def _spearman_rows(df, predictors, metrics, changes, n_boot: int, seed: int) -> list[dict]:
    """Spearman rho with its bootstrap interval over units, per change, metric and predictor."""
    import numpy as np

    from physgsa.core.stats import ConstantInputError, spearman_ci

    rows = []
    for change in changes:
        sub = df[df["change"] == change]
        for metric in metrics:
            for pred in predictors:
                x = sub[pred].to_numpy(dtype=np.float64)
                y = sub[f"{metric}"].to_numpy(dtype=np.float64)
                keep = np.isfinite(x) & np.isfinite(y)
                row = {"change": change, "metric": metric, "predictor": pred, "n": int(keep.sum()),
                       "n_left_out": int((~keep).sum())}
                if keep.sum() < 3:
                    row.update(status="too few units")
                elif np.all(x[keep] == x[keep][0]):
                    row.update(status="constant")
                elif np.all(y[keep] == y[keep][0]):
                    row.update(status="constant damage")
                else:
                    try:
                        iv = spearman_ci(x[keep], y[keep], n_boot=n_boot, seed=seed)
                    except ConstantInputError:  # pragma: no cover - caught above
                        row.update(status="constant")
                    else:
                        row.update(status="ok", rho=iv.point, low=iv.low, high=iv.high,
                                   n_undefined=iv.n_undefined)
                rows.append(row)
    return rows


def _cell(r: dict) -> str:
    if r["status"] != "ok":
        return r["status"]
    extra = f", n={r['n']}" if r["n_left_out"] else ""
    return f"{_fmt(r['rho'])} [{_fmt(r['low'])}, {_fmt(r['high'])}]{extra}"


def _damage_row(name, base_out, model, new, params) -> dict:
    from physgsa.models import damage as D

    for key, w in new.items():  # the stored layout must be the parameter's (with_weights refuses otherwise)
        if tuple(w.shape) != tuple(params[key].shape):
            raise SystemExit(f"{name}: {key} is stored as {w.shape}, the parameter is {tuple(params[key].shape)}")
    d = D.damage(name, base_out, D.with_weights(model, new))
    out = {}
    for metric, iv in d.metrics.items():
        out[metric] = iv.point
        out[f"{metric}_low"] = iv.low
        out[f"{metric}_high"] = iv.high
    return out


def _predictors(S, name: str, found, args, t0: float):
    """The predictor rows of every unit, computed in chunks that are kept, so a stopped run resumes.

    ``S.sensitivity`` runs on ``--chunk`` units at a time; each chunk is written at once to its own
    file, ``<out>/<model>.predictors/<first unit>.csv`` (written to a temporary name, then renamed),
    and a later run reads every chunk file and computes only the units missing. A unit's rows
    depend only on the base chain and that unit's changed chains, so chunks give the rows of one
    call. With ``--shard I/N`` this process takes every N-th missing unit from the I-th and stops
    after them (returns None): two shards on two cores, then one run without ``--shard``
    assembles the table and goes on.
    """
    import pandas as pd

    folder = os.path.join(args.out, f"{name}.predictors")
    os.makedirs(folder, exist_ok=True)
    files = sorted(f for f in os.listdir(folder) if f.endswith(".csv"))
    done = [pd.read_csv(os.path.join(folder, f), keep_default_na=True) for f in files]
    have = {u for d in done for u in d["unit"]}
    index = {u.name: i for i, u in enumerate(found)}
    todo = [u for u in found if u.name not in have]
    i, n = args.shard
    mine = todo[i::n]
    log(f"{name}: predictors of {len(found) - len(todo)} units kept, {len(todo)} to do, {len(mine)} here", t0)
    for a in range(0, len(mine), args.chunk):
        chunk = mine[a:a + args.chunk]
        part = S.sensitivity(name, unit_list=chunk)
        with open(os.path.join(folder, "attrs.json"), "w") as fh:
            json.dump(part.attrs, fh, sort_keys=True)
        path = os.path.join(folder, f"{index[chunk[0].name]:05d}.csv")
        part.to_csv(path + ".tmp", index=False)
        os.replace(path + ".tmp", path)
        done.append(pd.read_csv(path))  # read back: fresh and resumed chunks parse the same way
        log(f"{name}: predictors {a + len(chunk)}/{len(mine)} units of this process", t0)
    if args.shard != (0, 1):
        return None
    pred = pd.concat(done, ignore_index=True)
    order = {c: j for j, c in enumerate(S.CHANGES)}
    pred = pred.sort_values(["unit", "change"], key=lambda col: col.map(index if col.name == "unit" else order))
    pred = pred.reset_index(drop=True)
    with open(os.path.join(folder, "attrs.json")) as fh:
        pred.attrs.update(json.load(fh))
    return pred


def run_model(name: str, args, t0: float) -> dict:
    import numpy as np
    import pandas as pd

    from physgsa.models import damage as D
    from physgsa.models import units as U
    from physgsa.runs import sensitivity as S

    tm = time.time()
    changes = S.CHANGES
    found = U.units(name)
    if args.shard != (0, 1):  # a shard computes its share of the predictors only
        _predictors(S, name, found, args, t0)
        return {}
    model = D.load(name)
    params = dict(model.named_parameters(remove_duplicate=False))
    base_out = D.evaluate(name, model)
    log(f"{name}: {len(found)} units x {len(changes)} changes; base evaluated on {base_out.n_examples} "
         f"held-out examples", t0)

    # 1. damage per unit x change
    t_damage = time.time()
    drows = []
    for i, u in enumerate(found):
        for label, change in changes.items():
            row = {"unit": u.name, "change": label}
            row.update(_damage_row(name, base_out, model, U.changed_weights(name, u, change), params))
            drows.append(row)
        if (i + 1) % 8 == 0 or i + 1 == len(found):
            log(f"{name}: damage {i + 1}/{len(found)} units", t0)
    t_damage = time.time() - t_damage
    metrics = [k for k in drows[0] if k not in ("unit", "change") and not k.endswith(("_low", "_high"))]

    # predictors
    t_pred = time.time()
    pred = _predictors(S, name, found, args, t0)
    t_pred = time.time() - t_pred
    log(f"{name}: predictors in {t_pred:.1f} s ({pred.attrs['factors']})", t0)
    predictors = [*S.PHYSGSA_PREDICTORS, *S.BASELINES]
    table = pred.merge(pd.DataFrame(drows), on=["unit", "change"], how="inner", validate="one_to_one")
    if len(table) != len(found) * len(changes):
        raise SystemExit(f"{name}: the join lost rows ({len(table)} of {len(found) * len(changes)})")
    table.to_csv(os.path.join(args.out, f"{name}.csv"), index=False, float_format="%.10g")

    # 2. Spearman over units
    corr = _spearman_rows(table, predictors, metrics, list(changes), args.n_boot, args.seed)

    # 3. several blocks together
    t_sets = time.time()
    rng = np.random.default_rng(SET_SEED)
    k = min(args.set_size, len(found))
    sets = [sorted(rng.choice(len(found), size=k, replace=False).tolist()) for _ in range(args.sets)]
    joint_units = []
    for idx in sets:
        members = [found[j] for j in idx]
        joint_units.append(U.Unit(name="+".join(m.name for m in members), model=name,
                                  depth=min(m.depth for m in members), kind="set",
                                  parts=tuple(p for m in members for p in m.parts)))
    joint = S.sensitivity(name, unit_list=joint_units)
    srows = []
    for si, ju in enumerate(joint_units):
        members = [found[j].name for j in sets[si]]
        for label, change in changes.items():
            row = {"set": si, "units": ju.name, "change": label}
            row.update(_damage_row(name, base_out, model, U.changed_weights(name, ju, change), params))
            jr = joint[(joint["unit"] == ju.name) & (joint["change"] == label)].iloc[0]
            row["S"] = float(jr["S"])
            single = table[(table["unit"].isin(members)) & (table["change"] == label)]
            for p in predictors:
                row[f"sum_{p}"] = float(single[p].astype(float).sum(skipna=False))
            srows.append(row)
    sets_df = pd.DataFrame(srows)
    sets_df.to_csv(os.path.join(args.out, f"{name}_sets.csv"), index=False, float_format="%.10g")
    set_corr = _spearman_rows(sets_df, ["S", *[f"sum_{p}" for p in predictors]], metrics, list(changes),
                              args.n_boot, args.seed)
    t_sets = time.time() - t_sets
    log(f"{name}: {len(sets)} sets of {k} units in {t_sets:.1f} s", t0)

    result = {
        "model": name, "n_units": len(found), "changes": list(changes), "metrics": metrics,
        "n_heldout_examples": base_out.n_examples, "factors": pred.attrs["factors"],
        "uses_unlabeled_inputs": pred.attrs["uses_unlabeled_inputs"],
        "spearman": corr, "sets": {"seed": SET_SEED, "size": k, "members": [[found[j].name for j in s] for s in sets],
                                   "spearman": set_corr},
        "n_boot": args.n_boot, "seed": args.seed,
        "seconds": {"total": round(time.time() - tm, 1), "damage": round(t_damage, 1),
                    "predictors": round(t_pred, 1), "sets": round(t_sets, 1)},
    }
    _write_md(result, table, sets_df, predictors, metrics, args.out)
    with open(os.path.join(args.out, f"{name}.json"), "w") as fh:
        json.dump(result, fh, indent=2, sort_keys=True)
        fh.write("\n")
    log(f"{name}: done in {result['seconds']['total']} s", t0)
    return result


def _write_md(res: dict, table, sets_df, predictors, metrics, out: str) -> None:
    name = res["model"]
    lines = [f"# {name}: does the structure predict damage?", "",
             f"{res['n_units']} units x {len(res['changes'])} changes; damage on {res['n_heldout_examples']} held-out "
             f"examples; factors: {res['factors']}. Spearman rho over units with its bootstrap 95% interval "
             f"({res['n_boot']} resamples, seed {res['seed']}). `constant`: the predictor has one value over the "
             "units (no ranking); `n=`: units left where the predictor is not finite. Predictors marked * use "
             "unlabeled training inputs. Measured once with the pre-registered score; nothing tuned.", "",
             f"Time: {res['seconds']}", ""]
    by = {(r["change"], r["metric"], r["predictor"]): r for r in res["spearman"]}
    for change in res["changes"]:
        lines += [f"## {change}", "", "| predictor | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for p in predictors:
            star = "*" if res["uses_unlabeled_inputs"].get(p) else ""
            lines.append(f"| {p}{star} | " + " | ".join(_cell(by[(change, m, p)]) for m in metrics) + " |")
        sub = table[table["change"] == change]
        lines += ["", "Damage over units: " + "; ".join(
            f"{m} median {sub[m].median():.4g}, max {sub[m].max():.4g}" for m in metrics), ""]
    s = res["sets"]
    lines += [f"## Several blocks together ({len(s['members'])} sets of {s['size']} units, seed {s['seed']})", "",
              "| set | change | " + " | ".join(metrics) + " | S (joint) | sum of single S |",
              "|---|---|" + "---|" * (len(metrics) + 2)]
    for _, r in sets_df.iterrows():
        dm = " | ".join(f"{r[m]:.4g} [{r[m + '_low']:.4g}, {r[m + '_high']:.4g}]" for m in metrics)
        lines.append(f"| {r['set']} | {r['change']} | {dm} | {r['S']:.4g} | {r['sum_S']:.4g} |")
    lines += ["", "Members: " + "; ".join(f"{i}: {', '.join(m)}" for i, m in enumerate(s["members"])), "",
              "Spearman over the sets (few sets: wide intervals):", "",
              "| change | predictor | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    sby = {(r["change"], r["metric"], r["predictor"]): r for r in s["spearman"]}
    for change in res["changes"]:
        for p in ["S", *[f"sum_{q}" for q in predictors]]:
            lines.append(f"| {change} | {p} | " + " | ".join(_cell(sby[(change, m, p)]) for m in metrics) + " |")
    with open(os.path.join(out, f"{name}.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _summary(r: dict) -> dict:
    return {**{k: r[k] for k in ("n_units", "factors", "seconds", "spearman")}, "sets_spearman": r["sets"]["spearman"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-resnet,digits-vit")
    ap.add_argument("--out", default="benchmarks/results/sensitivity")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--sets", type=int, default=8, help="random sets of units changed together, per change")
    ap.add_argument("--set-size", type=int, default=4)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=4, help="units per kept chunk of predictors")
    ap.add_argument("--shard", default="0/1", help="I/N: compute every N-th missing unit from the I-th, then stop")
    args = ap.parse_args(argv)
    i, n = (int(x) for x in args.shard.split("/"))
    if not 0 <= i < n:
        ap.error(f"--shard {args.shard}: expected I/N with 0 <= I < N")
    args.shard = (i, n)
    return run_models(args, run_model, _summary)


if __name__ == "__main__":
    raise SystemExit(main())

"""The appendix of docs/validation.md: every predictor's Spearman table, per model, change and metric.

Reads ``benchmarks/results/sensitivity/<model>.json`` (written by ``benchmarks/sensitivity.py``)
and prints Markdown: one table per model, a row per predictor (physgsa's, then the baselines; a
``*`` marks those that use unlabeled training inputs), a column per change and damage metric,
each cell Spearman's rho over units with its bootstrap 95% interval.

    python benchmarks/validation_tables.py > /tmp/appendix.md
    python benchmarks/validation_tables.py --summary digits-vit   # a short table of the results section
"""

from __future__ import annotations

import argparse
import json
import os

MODELS = ("digits-vit", "pysource-gpt", "minilm", "digits-resnet", "digits-diffusion")
CHANGES = {"int4": "int4 g32", "int3": "int3 g32", "prune50": "prune 50%"}


def _cell(x: dict) -> str:
    if x["status"] != "ok":
        return x["status"]
    text = f"{x['rho']:+.2f} [{x['low']:+.2f}, {x['high']:+.2f}]".replace("-", "−")
    return text + (f", n={x['n']}" if x.get("n_left_out") else "")


def table(record: dict) -> str:
    """The Markdown table of one model's record."""
    rows = {}
    for x in record["spearman"]:
        rows.setdefault(x["predictor"], {})[(x["change"], x["metric"])] = x
    cols = [(c, m) for c in record["changes"] for m in record["metrics"]]
    used = record["uses_unlabeled_inputs"]
    head = "| predictor | " + " | ".join(f"{CHANGES.get(c, c)}: {m}" for c, m in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for p, cells in rows.items():
        name = f"`{p}`" + (" *" if used.get(p) else "")
        lines.append(f"| {name} | " + " | ".join(_cell(cells[c]) if c in cells else "—" for c in cols) + " |")
    return "\n".join(lines)


NAMES = {"S": "`S` (pre-registered)", "depth": "depth", "w_norm": "`||W||_F`", "dw_norm": "`||Delta W||_F`",
         "dw_rel": "`||Delta W||_F / ||W||_F`", "alpha": "alpha", "outlier_channels": "outlier channels"}


def summary_table(record: dict) -> str:
    """The short table of docs/validation.md's results: one task metric (KL where measured, else the
    first that is not the accuracy drop), rows ``S``, one more of physgsa's predictors
    (``drift_ratio_sum`` with Jacobian-mode factors, ``share_drop`` with static ones) and the
    baselines, a column per change.
    """
    metric = "kl" if "kl" in record["metrics"] else [m for m in record["metrics"] if m != "accuracy_drop"][0]
    cells: dict[str, dict[str, dict]] = {}
    for x in record["spearman"]:
        if x["metric"] == metric:
            cells.setdefault(x["predictor"], {})[x["change"]] = x
    # physgsa's row beside S: drift_ratio_sum for Jacobian-mode factors, share_drop for static ones
    # (the choice of the tables already in docs/validation.md, fixed before MiniLM's run).
    ours = "drift_ratio_sum" if record["factors"].startswith("Jacobian") else "share_drop"
    rows = ["S", ours, "depth", "w_norm", "dw_norm", "dw_rel", "alpha", "outlier_channels"]
    lines = ["| predictor | " + " | ".join(CHANGES.get(c, c) for c in record["changes"]) + " |",
             "|---" * (len(record["changes"]) + 1) + "|"]
    for p in rows:
        if p in cells:
            name = NAMES.get(p, f"`{p}` (physgsa)")
            lines.append(f"| {name} | " + " | ".join(_cell(cells[p][c]) for c in record["changes"]) + " |")
    return f"metric: {metric}\n\n" + "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="benchmarks/results/sensitivity")
    ap.add_argument("--summary", default="", help="print the short results table of this model instead")
    args = ap.parse_args(argv)
    if args.summary:
        with open(os.path.join(args.results, f"{args.summary}.json")) as fh:
            print(summary_table(json.load(fh)))
        return 0
    for name in MODELS:
        path = os.path.join(args.results, f"{name}.json")
        if not os.path.exists(path):
            print(f"**{name}**: not measured.\n")
            continue
        with open(path) as fh:
            record = json.load(fh)
        print(f"**{name}** ({record['n_units']} units; {record['factors']}; "
              f"{record['n_heldout_examples']} held-out examples)\n")
        print(table(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

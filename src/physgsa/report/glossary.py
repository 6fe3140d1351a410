"""What the result means, in plain words: the report's "How to read" box, its glossary, and docs/glossary.md.

One source for the three: the report shows :data:`READING` at the top and every table column's
entry of :data:`COLUMNS` at its header and in its glossary; ``python -m physgsa.report.glossary`` prints
docs/glossary.md (a test checks that the file matches). docs/definitions.md has the formulas.
"""

from __future__ import annotations

__all__ = ["READING", "FAILING", "NEXT_STEPS", "COLUMNS", "COMPARE_COLUMNS", "STUDY_COLUMNS", "PROTOCOL", "column",
           "markdown"]

#: (term, one plain sentence): what a reader needs to read the verdict.
READING = (
    ("member", "An interface is a member of the certificate domain when all twelve protocol items pass: the "
               "channel structure read from the dominant windows is then provably the structure of the full "
               "transport, and every check agrees."),
    ("rho_static", "The static radius: how far (in Frobenius norm) the windowed transport A0 can change before "
                   "any support, mask, edge of the incidence graph or hub can change. Larger means sturdier."),
    ("a priori verdict", "Holds when eps_trunc, a bound on the truncation error computed from the windows alone, "
                         "is at most safety · rho_static (safety 0.9). Its ratio eps_trunc / (safety · rho_static) "
                         "is the factor by which the bound overshoots the radius (above 1: fails)."),
    ("measured verdict", "Holds when the exact truncation error ||E||_F = ||A1 − A0||_F, full minus windowed "
                         "transport, is below rho_static. Its ratio ||E||_F / rho_static reads the same way."),
    ("direct verdict", "Recomputes the structure on the full transport A1 with the same groups and thresholds and "
                       "compares: 'same' means truncating changed nothing visible, whatever the margins say."),
    ("certified share, a priori", "The share of A0's energy whose routing (which input channels each group of "
                                  "output rows reads) is proven to survive the truncation, from the windows alone "
                                  "and without the full product: how much of the routing you can trust."),
    ("certified share, measured", "The same share, proven with the exact truncation error of each group's block of "
                                  "each channel instead of a bound: what the truncation really leaves certified."),
    ("robustness profile", "For every size r of a change of A0 (in Frobenius norm), the shares of the channels, "
                           "memberships, pairs of groups and hubs that provably cannot change: 1 below rho_static, "
                           "falling step by step as r grows; the report marks rho_static, eps_trunc and ||E||_F on "
                           "it."),
    ("binding margin", "What sets rho_static: unit_gap (a channel whose energy sits closest to its group's "
                       "threshold) or pair_overlap (two groups whose shared weight sits closest to the edge "
                       "threshold kappa)."),
    ("core / overlap / noise", "Each entry of A0 is core if its input channel belongs to its row group's support "
                               "and to no other group's, overlap if it is shared with other groups, noise if it is "
                               "outside the support. The energy fractions say how much of the transport is private "
                               "routing, shared routing and leakage."),
    ("hubs", "Input channels (or heads) in the supports of at least three groups (of every group when there are "
             "fewer than three): shared inputs. They are channels, not nodes of the incidence graph, whose nodes "
             "are the groups."),
    ("incidence graph", "One node per row group; an edge joins two groups whose shared input energy w_gh reaches "
                        "kappa (5% of the largest pair weight)."),
    ("SRS sets", "For each edge, the input channels both groups use, and for each group the channels only it uses: "
                 "the routing table the certificate protects."),
    ("ICM labels", "The ICM (Invariant Channel Mapping) labels every output row: SC (single-core) when at least "
                   "half its energy is in core channels, SA (shared, aligned) when less is core but the row follows "
                   "its group's profile (correlation at least 0.5), ST (shared, transit) otherwise. A label is "
                   "certified when the truncation provably cannot change it."),
    ("rho, s, k_q", "Part I's Cartan coordinates of a factor's spectrum: rho = log lambda_1 is the share of the "
                    "normalized energy in the top singular value, from 0 (flat) to log r (rank one); s is the "
                    "fitted power-law exponent; k_q is how many singular values hold the fraction q of the energy."),
    ("chain break", "Two adjacent factors whose sizes do not meet, so there is no interface between them; physgsa "
                    "reports it and never guesses across it."),
    ("no channel structure", "An interface where a group keeps at least 95% of the inputs, at least half the "
                             "groups share one identical support, every input is a hub, or the core energy is 0: "
                             "nothing tells the groups apart, so its maps say nothing about routing, certified or "
                             "not."),
    ("protocol", "Twelve checks per interface, from exact arithmetic to certified labels; the glossary lists them."),
)

#: What a failing certificate says about the network.
FAILING = ("A failing certificate does not say that the network has no channel structure. It says that the "
           "structure read from the dominant windows is not provably the structure of the full transport: the "
           "energy outside the windows (||E||_F) is larger than the margin the structure has (rho_static). The "
           "ratios say by how much. Near 1, slightly larger windows may be enough; far above 1, the tail of the "
           "spectrum carries routing that the windows drop (trained language models have flat, heavy-tailed "
           "spectra), or a channel sits right at its group's threshold (a tiny rho_static, named by the binding "
           "margin).")

#: (option, what it changes): what to try after "no interface is a member".
NEXT_STEPS = (
    ("--q 0.99", "larger windows (they keep 99% of the energy), so a smaller truncation error; groups and "
                 "thresholds are refitted."),
    ("--window-search", "for each interface, the smallest windows along q from 0.5 to 0.999 for which the direct "
                        "check and the measured verdict hold; the report plots ||E||_F and rho_static against q."),
    ("--factor branch", "certify the residual branches R alone: in I + R the identity flattens every spectrum."),
    ("--interfaces heads --units heads", "the head-level chain W_O -> W_V, whose groups and input units are "
                                         "attention heads."),
    ("--mode jacobian", "factors from the network's Jacobians at real inputs instead of from its weights."),
    ("--threshold relative, --groups modes", "other rules for the supports and the row groups."),
)

#: The steps that need a network (a model, not a chain of plain matrices): left out for a matrix chain.
MODEL_ONLY_STEPS = ("--factor branch", "--interfaces heads --units heads", "--mode jacobian")

#: One plain sentence per table column (factors, interfaces, margins, spectra).
COLUMNS = {
    "name": "The factor's (or matrix's) name in the model or file.",
    "interface": "The interface: the left factor's outputs feeding the right factor's inputs (left->right).",
    "rows": "Number of rows: the factor's output channels.",
    "cols": "Number of columns: the factor's input channels.",
    "r": "min(rows, cols): the number of singular values.",
    "rho": "Top-radial Cartan coordinate log lambda_1 = log(r sigma_1^2 / ||A||_F^2): 0 for a flat spectrum, "
           "log r for rank one.",
    "s_top": "Power-law exponent s of the Gibbs–Cartan orbit through rho (the top chart).",
    "s_mle": "Power-law exponent s fitted to the whole spectrum by maximum likelihood.",
    "s_window": "Slope of log lambda_k against log k over the window (null with fewer than two positive values).",
    "window_r2": "R² of that straight-line fit over the window.",
    "hellinger": "Squared Hellinger distance between the spectrum and the fitted power law (0: a perfect fit).",
    "kl": "Kullback–Leibler divergence between the spectrum and the fitted power law.",
    "k_q": "Effective rank: the fewest singular values that hold the fraction q of the energy.",
    "k": "The dominant window: k_q moved to the largest nearby gap in the spectrum.",
    "window_gap": "Relative gap (sigma_k − sigma_k+1) / sigma_1 where the window ends; small means a fragile window.",
    "tau": "Energy outside the window (of the normalized factor, whose total energy is r).",
    "tau_gc": "The same tail energy as the fitted power law predicts it.",
    "numerical_rank": "Singular values above rounding (max(m, n) eps sigma_1).",
    "flags": "Conditions worth knowing (flat or steep spectrum, degenerate window, no channel structure, ...); "
             "docs/definitions.md explains each.",
    "source_dtype": "The precision the weights were stored in (computations are in float64).",
    "energy_kept": "Jacobian mode: the share of the sublayer Jacobian's energy the token reduction reads.",
    "k_left": "Window of the left factor (its dominant output directions kept).",
    "k_right": "Window of the right factor (its dominant input directions kept).",
    "slack": "log sigma_1(A') + log sigma_1(A) − log sigma_1(A'A) ≥ 0: how much the top directions fail to "
             "line up.",
    "trunc_error": "||E||_F = ||A1 − A0||_F: the exact truncation error, full transport minus windowed transport.",
    "eps_trunc": "A bound on ||E||_F from the windows alone (no full product): the a priori verdict's input.",
    "rho_static": "Static radius: any change of A0 smaller than this (Frobenius norm) leaves the channel structure "
                  "unchanged.",
    "binding": "Which margin sets rho_static: unit_gap (a channel nearest its threshold) or pair_overlap (a pair "
               "weight nearest kappa).",
    "binding margin": "Which margin sets rho_static, and where: unit_gap (group g, unit u) or pair_overlap "
                      "(groups g–h).",
    "certified_a_priori": "eps_trunc ≤ safety · rho_static: certified without forming the full product.",
    "certified_measured": "||E||_F < rho_static: certified with the exact truncation error.",
    "certified_share_apriori": "Share of ||A0||_F^2 in the memberships (group, input unit) the graded certificate "
                               "proves unchanged by the truncation, from the windows alone (each membership's error "
                               "bound is below its margin).",
    "certified_share_measured": "The same share, proven with the exact error ||E[G_g, u]||_F of each block instead of "
                                "the bound.",
    "certified_columns_apriori": "Input units whose every membership is certified a priori: their degree, hub status "
                                 "and masks cannot change.",
    "hubs_certified_apriori": "Hubs whose whole column is certified a priori (out of n_hubs).",
    "pairs_certified_apriori": "Pairs of groups whose status in the incidence graph (edge or no edge) is certified a "
                               "priori.",
    "direct_same": "The structure recomputed on the full transport A1 is the same as on A0.",
    "a_priori_ratio": "eps_trunc / (safety · rho_static): above 1 the a priori verdict fails, by that factor.",
    "measured_ratio": "||E||_F / rho_static: above 1 the measured verdict fails, by that factor.",
    "energy_core": "Share of ||A0||_F^2 in core entries: inputs only the row's group uses.",
    "energy_overlap": "Share of ||A0||_F^2 in overlap entries: inputs the row's group shares with others.",
    "energy_noise": "Share of ||A0||_F^2 outside the row group's support.",
    "n_groups": "Number of row groups (k-means clusters, source modes or heads).",
    "n_edges": "Edges of the incidence graph: pairs of groups sharing enough input energy.",
    "n_hubs": "Input units in the supports of at least three groups.",
    "commutator": "||[P, Q]||_F / (||P||_F ||Q||_F), P = A A^T, Q = A'^T A': 0 when the two factors share "
                  "singular frames at the interface, at most 1/√2 (section 8, beyond the papers).",
    "intersection_dim": "Dimensions shared by the left factor's top output subspace and the right factor's top "
                        "input subspace (cosines ≥ 0.99, section 8).",
    "member": "All twelve protocol items pass: the interface is in the certificate domain.",
    "failed_items": "The protocol items that failed (numbers as in the protocol list).",
    "key": "The tensor's key in the checkpoint.",
    "log_norm": "log10 ||W||_F^2 (WeightWatcher).",
    "log_spectral_norm": "log10 sigma_1^2 (WeightWatcher).",
    "stable_rank": "||W||_F^2 / sigma_1^2 (WeightWatcher).",
    "matrix_rank": "Singular values above rounding (WeightWatcher).",
    "entropy": "WeightWatcher's spectral entropy with its 1e-10 epsilon: near 1 for a flat full-rank spectrum, "
               "above 1 for rank-deficient ones (about 45 at rank one).",
    "operator": "The matrix the Part I columns are on: physgsa's channel operator of the weight.",
    "ww_matrix": "The matrices WeightWatcher's metrics are on (for convs: the pooled kernel slices).",
    "ww_analyzed": "Whether WeightWatcher's analyze() with its defaults analyses this layer (ww_reason: why not).",
    "alpha_weighted": "alpha times log_spectral_norm (WeightWatcher).",
    "log_alpha_norm": "log10 of the sum of eigenvalues to the power alpha (WeightWatcher).",
    "alpha_status": "Which power-law fit ran (standard, or small-sample below 20 eigenvalues), or why there is none.",
    "alpha": "Power-law exponent of the eigenvalue tail, by maximum likelihood (WeightWatcher; 2 to 6 is typical "
             "of trained layers).",
    "xmin": "Where that tail starts (the eigenvalue with the best Kolmogorov–Smirnov fit).",
    "note": "How the matrix was read (a fused QKV split, a conv kernel as its zero-frequency matrix, a "
            "transposed Conv1D).",
}

#: compare.html's columns where they mean something else than in the report (one row per OTHER and interface).
COMPARE_COLUMNS = {
    "other": "The changed model: another checkpoint or file, or BASE after a simulated change (quantized, pruned, "
             "noised).",
    "interface": "The interface (left->right), read with BASE's windows, groups and thresholds in both models.",
    "delta_norm": "||ΔA0||_F: the Frobenius size of the change of the windowed transport A0 from BASE to OTHER.",
    "drift_bound": "A bound on ||ΔA0||_F from the factor changes alone (no product of OTHER's factors): the a "
                   "priori verdict's input.",
    "rho_static": "BASE's static radius: a change of A0 smaller than this (Frobenius norm) leaves the channel "
                  "structure unchanged.",
    "ratio": "||ΔA0||_F / rho_static: below 1 the change is too small to alter the structure.",
    "certified": "OTHER's structure is certified the same as BASE's: the drift bound, or ||ΔA0||_F, is below "
                 "rho_static.",
    "direct_same": "The structure recomputed on OTHER's A0 (BASE's windows, groups and thresholds) is the same as "
                   "BASE's, whatever the margins say.",
    "changed": "What the direct check found different: supports, degrees, masks, graph, SRS sets, hubs.",
    "labels_kept": "Share of the rows whose ICM label (SC, SA, ST, zero) is the same in OTHER as in BASE.",
    "certified_share_apriori": "Share of BASE's ||A0||_F^2 in the memberships (group, input unit) proven unchanged "
                               "in OTHER from the factor changes alone.",
    "certified_share_measured": "The same share, proven with the exact change of each block instead of the bound.",
    "profile_at_drift_bound": "BASE's robustness profile at the drift bound: the membership share no change of that "
                              "Frobenius size can alter.",
    "profile_at_delta_norm": "BASE's robustness profile at ||ΔA0||_F: the membership share no change of the actual "
                             "size can alter.",
}

#: study.html's columns (study.parquet: one row per model, or per model and interface).
STUDY_COLUMNS = {
    "model": "The model's label: a bundled model's name or a result directory's.",
    "family": "The model's family (CNN, ViT, BERT, GPT-2, ...), or unknown for a result directory.",
    "architecture": "The model's architecture as its adapter names it.",
    "weights": "Trained, random (the same architecture with seeded random weights: the control), or as given.",
    "factors": "Number of factors in the chain.",
    "interfaces": "Number of interfaces (adjacent factors whose sizes meet).",
    "members": "Interfaces in the certificate domain (all twelve protocol items pass), of all interfaces.",
    "chain breaks": "Adjacent factors whose sizes do not meet: no interface between them.",
    "no channel structure": "Interfaces where nothing tells the groups apart (every unit active, every unit a hub, "
                            "or no core energy).",
    "verdict": "The model's verdict, as its report states it.",
    "smallest margins": "The three interfaces with the smallest static radius rho_static, with ||E||_F / "
                        "rho_static.",
    "report": "A link to the model's own report.html, where there is one.",
    "depth": "Where the interface sits in its chain: 0 at the first factor, 1 at the last.",
    "ratio": "||E||_F / rho_static: above 1 the measured verdict fails, by that factor.",
    "share_SC": "Share of the interface's rows labelled SC (single-core).",
    "share_SA": "Share of the rows labelled SA (shared, aligned).",
    "share_ST": "Share of the rows labelled ST (shared, transit).",
    "no_channel_structure": "The interface shows no channel structure (see the report's glossary).",
}

#: The twelve protocol items in plain words (docs/definitions.md section 7 has the exact rules).
PROTOCOL = {
    1: "Everything was computed in float64, and the numerical ranks were recorded.",
    2: "Each normalized factor has ||A_hat||_F^2 = r to 1e-10.",
    3: "Both windows end at a visible gap of the spectrum (at least gap_floor = 0.001 of sigma_1): otherwise the "
       "windowed subspace is fragile.",
    4: "The quality numbers of the power-law chart (R², residual, tail error) are finite and recorded.",
    5: "The slack is at least 0, as proven, and the exponent drift bound holds.",
    6: "The exact truncation error is within its proven bound (a violation is a bug and stops the run).",
    7: "The core, overlap and noise parts are orthogonal and add up to the whole energy, to 1e-12.",
    8: "No unit sits exactly on its threshold (gamma > 0) and no pair weight exactly on kappa.",
    9: "Both the a priori and the measured verdict hold.",
    10: "The direct check finds the same structure on the full transport.",
    11: "Random perturbations smaller than rho_static never changed the structure (and the tests ran).",
    12: "Every non-zero row's ICM label is certified.",
}


def column(name: str, page: str = "report") -> str:
    """The plain definition of a table column ("" for an unknown one).

    ``page`` ("report", "compare" or "study"): the page's own meaning of a column comes first.
    """
    own = {"compare": COMPARE_COLUMNS, "study": STUDY_COLUMNS}.get(page, {})
    return own.get(name) or COLUMNS.get(name, "")


#: What the report says of a structure read from the weights (measured in docs/empirical.md,
#: "Support rules compared": static against Jacobian-mode supports, beside random supports).
WEIGHT_SPACE = ("This structure is read from the weights. Whether it is how the network routes real inputs was "
                "measured against the Jacobian-mode structure at real inputs (docs/empirical.md): for MiniLM (BERT) "
                "the two agree no better than random supports of the same sizes, so there the static structure is "
                "a property of the weights only; for the byte-level GPT-2 and the CNN they agree far above chance. "
                "Run with --mode jacobian for the structure at real inputs.")


def markdown() -> str:
    """docs/glossary.md: every entry above, as Markdown."""
    out = ["# Glossary", "",
           "Plain words for everything the report and the tables show; [definitions.md](definitions.md) has the",
           "formulas. This page is generated: `python -m physgsa.report.glossary > docs/glossary.md`.", "",
           "## How to read the result", ""]
    out += [f"- **{term}**: {text}" for term, text in READING]
    out += ["", "## What a failing certificate tells you", "", FAILING, "", "## What to try next", ""]
    out += [f"- `{opt}`: {text}" for opt, text in NEXT_STEPS]
    out += ["", "## The twelve protocol items", ""]
    out += [f"{i}. {text}" for i, text in PROTOCOL.items()]
    out += ["", "## Table columns", "", "| column | meaning |", "|---|---|"]
    out += [f"| `{name}` | {text} |" for name, text in COLUMNS.items()]
    for title, cols in (("compare.html", COMPARE_COLUMNS), ("study.html", STUDY_COLUMNS)):
        out += ["", f"## Columns of {title}", "", "| column | meaning |", "|---|---|"]
        out += [f"| `{name}` | {text} |" for name, text in cols.items()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover - regenerates docs/glossary.md
    print(markdown(), end="")


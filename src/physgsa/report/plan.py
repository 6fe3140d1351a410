"""``plan.html``: the plan's sentence, its bits against the budget, and the predicted damage per block and format.

Drawn from a :class:`~physgsa.outputs.plan.PlanResult` alone (its ``document``, as ``plan.json``
holds it), through the template ``templates/plan.html.j2``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..outputs.plan import PlanResult
from .pages import fmt, template

__all__ = ["render_plan_page", "draw_plan"]


def render_plan_page(result: PlanResult) -> str:
    """The HTML text of ``plan.html``."""
    doc = result.document
    blocks = doc["blocks"]
    counts = Counter(b["format"] for b in blocks)
    parts = ", ".join(f"{counts[f]} in {f}" for f in doc["formats"] if counts[f])
    sentence = f"{len(blocks)} block{'s' * (len(blocks) != 1)}: {parts}."
    bits_line = (f"{fmt(doc['bits_per_weight_float'])} bits per weight ({doc['bits_per_weight']}, scales counted) "
                 f"within a budget of {fmt(doc['budget_bits_float'])} ({doc['budget_bits']}), over "
                 f"{doc['n_weights']} weights.")
    fitting = [u for u in doc["uniform"] if u["fits"]]
    uniform_line = ""
    if fitting:
        best = max(fitting, key=lambda u: u["bits_per_weight"])
        uniform_line = (f"uniform {best['format']}, the widest single format within the budget, predicts "
                        f"{fmt(best['predicted_damage'])} at {fmt(best['bits_per_weight'])} bits per weight")
    outside = doc["weights_outside_blocks"]
    unseen = doc.get("unseen") or []
    them = "it" if len(unseen) == 1 else "them"
    unseen_line = (f" The score cannot see {', '.join(unseen)} (no factor of the chain reads {them}): kept in the "
                   "widest format, counted in the budget." if unseen else "")
    rows = [{**b, "predicted": doc["predicted"][b["block"]], "matrices": ", ".join(doc["matrices"][b["block"]])}
            for b in blocks]
    return template("plan.html.j2").render(
        model=doc["model"], architecture=doc["architecture"], formats=", ".join(doc["formats"]),
        factors=doc["factors"], jacobian=doc["factors"] != "static", sentence=sentence, bits_line=bits_line,
        damage=doc["predicted_damage"], uniform_line=uniform_line, blocks=rows, format_names=doc["formats"],
        uniform=doc["uniform"], applied=bool(doc["parameters"].get("apply")),
        per_text=("every weight matrix at one depth" if doc["parameters"].get("per") == "depth" else
                  "one weight matrix, or the q, k or v rows of a fused one"),
        outside=(f"{outside} weights lie outside the planned blocks (embeddings, norms, biases, a head outside the "
                 "chain): they keep their precision and are not counted in the budget." if outside else
                 "Every weight lies in a planned block.") + unseen_line)


def draw_plan(result: PlanResult, directory: Path) -> None:
    """Write ``plan.html`` into ``directory``."""
    (Path(directory) / "plan.html").write_text(render_plan_page(result), encoding="utf-8")

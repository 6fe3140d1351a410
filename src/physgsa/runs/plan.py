"""Mixed precision from the predicted damage: one format per block within a bits budget (issue 23, item 3).

The allocation core of ``physgsa plan``: given blocks (groups of weight matrices), a predicted
damage ``D(b, f)`` per block ``b`` and format ``f``, and a budget ``B`` in bits per weight,
choose one format ``f(b)`` per block so that

    sum_b bits(b, f(b)) / sum_b n(b)  <=  B        (exactly),
    sum_b D(b, f(b))                  is minimal,

``n(b)`` the block's number of weights.

**Bits, scales counted.** A matrix of ``r`` output rows and ``c`` inputs (a conv kernel
``(out, in, kh, kw)``: ``r = out``, ``c = in * kh * kw``, the layout :mod:`physgsa.core.perturb`
quantizes) costs, with one 16-bit scale per scaling block:

- ``intK`` round-to-nearest in groups of ``g`` along the input axis:
  ``bits = r * c * K + 16 * r * ceil(c / g)``; when ``g`` divides ``c`` that is
  ``K + 16 / g`` bits per weight (int4 g32: 4.5; int3 g32: 3.5);
- ``intK`` per output channel (int8's default): ``bits = r * c * K + 16 * r``, i.e.
  ``K + 16 / c`` bits per weight (``c`` = in_features);
- ``fp16`` and ``bf16``: 16 bits per weight, no scale.

A block given only by its weight count ``n`` (no shapes) is costed by the per-weight formula
``n * (K + 16 / g)``, an exact rational; a per-channel format then needs the shapes and is refused.

**Exactness.** Every cost is an exact integer (or, for a block given by its count only, a
:class:`fractions.Fraction`), and the budget is a Fraction too: an int as it is, a string or a
float by its decimal text (``4.6`` means 46/10, not the binary double nearest it). The test
``sum bits <= B * sum n`` is done in Fractions: no rounding anywhere.

**Method.** An exact multiple-choice knapsack by dynamic programming over blocks, keeping the
Pareto frontier of (exact total bits, summed damage) of the partial assignments: after block
``i`` the frontier holds, for every achievable total cost, the least damage, and drops every
state that costs more and does not damage less, or whose cost plus the cheapest completion
exceeds the budget. The result is a global optimum (a frontier state is only dropped when
another dominates it). The frontier has at most as many states as there are distinct partial
cost sums, which is small for the bundled models (blocks repeat shapes; <= 100 blocks, <= 4
formats). Ties in damage go to the fewer bits, then to the earlier format in ``formats`` order
block by block; damages are summed in block order, so the same input gives the same plan.

**Predicted damage.** :func:`block_damage` takes, per block (the units of kind ``"matrix"`` of
:func:`physgsa.models.units.units` that share a depth), the pre-registered combined score ``S``
of docs/validation.md (:func:`physgsa.runs.sensitivity.sensitivity`) with the format applied to
the whole block at once; the score is not changed or fitted. A table of damages per
(block, format) from anywhere else can be given to :func:`allocate` instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ..core.perturb import Change, parse_change
from ..core.validation import InvalidParameterError, Param, check_params, spell
from ..models import units as U
from ..models.jacobian import encodings, load_module
from ..models.sources import ModelSourceError
from ..outputs.plan import PlanResult
from .sensitivity import sensitivity

__all__ = ["Format", "Block", "Allocation", "InfeasibleBudgetError", "parse_format", "parse_formats", "as_budget",
           "matrix_bits", "block_bits", "allocate", "block_units", "plan_blocks", "block_damage",
           "Prediction", "predict", "plan_allocation",
           "SCALE_BITS", "DEFAULT_GROUP", "PLAN_PARAMS", "plan_model"]

#: Bits of one scale (fp16), per scaling block.
SCALE_BITS = 16
#: Group size of ``intK`` for K < 8 when none is named (the protocol's RTN g32).
DEFAULT_GROUP = 32

_FMT = re.compile(r"^(?P<base>int[348]|fp16|bf16)(?:[:_-]?g(?P<g>\d+))?$")


class InfeasibleBudgetError(InvalidParameterError):
    """The budget is below the cheapest format everywhere; ``minimum`` is the least achievable bits per weight."""

    def __init__(self, message: str, minimum: Fraction):
        super().__init__(message)
        self.minimum = minimum


@dataclass(frozen=True)
class Format:
    """A weight format: ``bits`` per value, and ``group_size`` (None: per output channel; 0: no scale)."""

    name: str
    bits: int
    group_size: int | None

    @property
    def change(self) -> Change:
        """The simulated change of :mod:`physgsa.core.perturb` for this format."""
        base = self.name.split(":")[0]
        if self.group_size == 0:
            return parse_change(quantize=base)
        if self.group_size is None:
            return parse_change(quantize=base, granularity="channel")
        return parse_change(quantize=base, group_size=self.group_size)


def parse_format(text: str) -> Format:
    """A format by name: ``int4`` / ``int3`` (groups of 32), ``int4:g64``, ``int8`` (per channel), ``int8:g128``,
    ``fp16``, ``bf16``.
    """
    m = _FMT.match(str(text).strip().lower())
    if not m:
        raise InvalidParameterError(f"unknown format {text!r}; use int3, int4, int8 (optionally :gN), fp16 or bf16.")
    base, g = m.group("base"), m.group("g")
    if base in ("fp16", "bf16"):
        if g is not None:
            raise InvalidParameterError(f"{base} has no scale groups; got {text!r}.")
        return Format(base, 16, 0)
    k = int(base[3:])
    if g is not None:
        if int(g) < 1:
            raise InvalidParameterError(f"group size must be >= 1; got {text!r}.")
        return Format(f"{base}:g{int(g)}", k, int(g))
    return Format(base, k, None) if k == 8 else Format(base, k, DEFAULT_GROUP)


def parse_formats(formats: str | Iterable[str | Format]) -> list[Format]:
    """A comma-separated list or an iterable of formats; duplicates refused, order kept."""
    items = [s for s in formats.split(",") if s.strip()] if isinstance(formats, str) else list(formats)
    out = [f if isinstance(f, Format) else parse_format(f) for f in items]
    if not out:
        raise InvalidParameterError("no format given.")
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        raise InvalidParameterError(f"a format is named twice: {names}.")
    return out


def as_budget(budget: int | float | str | Fraction) -> Fraction:
    """The budget in bits per weight as an exact Fraction (a float by its decimal text: 4.6 is 46/10)."""
    if isinstance(budget, bool):
        raise InvalidParameterError(f"the budget must be a number of bits per weight; got {budget!r}.")
    try:
        if isinstance(budget, Fraction):
            b = budget
        elif isinstance(budget, int):
            b = Fraction(budget)
        elif isinstance(budget, float):
            if not math.isfinite(budget):
                raise ValueError
            b = Fraction(repr(budget))
        else:
            b = Fraction(str(budget).strip())
    except (ValueError, ZeroDivisionError, TypeError):
        raise InvalidParameterError(f"the budget must be a finite number of bits per weight; got {budget!r}.") from None
    if b <= 0:
        raise InvalidParameterError(f"the budget must be > 0 bits per weight; got {budget!r}.")
    return b


def matrix_bits(rows: int, cols: int, fmt: Format) -> int:
    """Exact bits of an ``rows x cols`` (out, in) matrix in ``fmt``, scales included (module docstring)."""
    if fmt.group_size == 0:
        return 16 * rows * cols
    scales = rows if fmt.group_size is None else rows * (-(-cols // fmt.group_size))
    return rows * cols * fmt.bits + SCALE_BITS * scales


@dataclass(frozen=True)
class Block:
    """A block: its name and either the (rows, cols) of its matrices or, with ``shapes=()``, a weight count."""

    name: str
    shapes: tuple[tuple[int, int], ...] = ()
    count: int = 0

    @property
    def n_weights(self) -> int:
        """Number of weights."""
        return sum(r * c for r, c in self.shapes) if self.shapes else self.count


def _as_block(b: Any) -> Block:
    if isinstance(b, Block):
        blk = b
    else:
        name, n = b
        if isinstance(n, (int,)) and not isinstance(n, bool):
            blk = Block(str(name), (), int(n))
        else:
            blk = Block(str(name), tuple((int(r), int(c)) for r, c in n))
    if blk.n_weights <= 0 or any(r <= 0 or c <= 0 for r, c in blk.shapes):
        raise InvalidParameterError(f"block {blk.name!r} has no weights.")
    return blk


def block_bits(block: Block, fmt: Format) -> Fraction:
    """Exact bits of a block in ``fmt`` (an integer for a block with shapes)."""
    if block.shapes:
        return Fraction(sum(matrix_bits(r, c, fmt) for r, c in block.shapes))
    if fmt.group_size is None:
        raise InvalidParameterError(f"block {block.name!r} is given by its weight count only; the per-channel format "
                                    f"{fmt.name} needs its matrix shapes (in_features).")
    n = block.count
    return Fraction(16 * n) if fmt.group_size == 0 else n * (fmt.bits + Fraction(SCALE_BITS, fmt.group_size))


@dataclass
class Allocation:
    """The plan: a format per block, its exact bits and its summed predicted damage."""

    assignment: dict[str, str]
    total_bits: Fraction
    n_weights: int
    budget: Fraction
    damage: float
    formats: list[str]
    blocks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bits_per_weight(self) -> Fraction:
        """``total_bits / n_weights``, exact."""
        return self.total_bits / self.n_weights

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: exact fractions as ``"p/q"`` strings beside their floats."""
        return {"budget_bits": str(self.budget), "budget_bits_float": float(self.budget),
                "bits_per_weight": str(self.bits_per_weight), "bits_per_weight_float": float(self.bits_per_weight),
                "total_bits": str(self.total_bits), "n_weights": self.n_weights, "predicted_damage": self.damage,
                "formats": list(self.formats), "blocks": [dict(b) for b in self.blocks]}


def allocate(blocks: Sequence[Any], damage: Mapping[tuple[str, str], float], formats: str | Iterable[str | Format],
             budget_bits: int | float | str | Fraction) -> Allocation:
    """One format per block, average bits per weight <= ``budget_bits`` exactly, least summed damage.

    Parameters
    ----------
    blocks : sequence of Block, ``(name, n_weights)`` or ``(name, [(rows, cols), ...])``
        The blocks, in order. Names must be distinct.
    damage : mapping ``(block name, format name) -> float``
        The predicted damage; every pair must be present and finite.
    formats : str or iterable
        ``"int4,int8"`` or a list of names or :class:`Format`.
    budget_bits : int, float, str or Fraction
        ``B``: the largest allowed ``sum bits / sum n_weights`` (:func:`as_budget`).

    Returns
    -------
    Allocation
        ``sum_b bits(b, f(b)) <= B * sum_b n(b)`` holds exactly, and ``sum_b D(b, f(b))`` is the
        least over all assignments that meet it (module docstring: the method).

    Raises
    ------
    InfeasibleBudgetError
        When even the cheapest format in every block exceeds ``B``; the message gives the least
        achievable bits per weight.
    """
    fmts = parse_formats(formats)
    budget = as_budget(budget_bits)
    blks = [_as_block(b) for b in blocks]
    if not blks:
        raise InvalidParameterError("no block given.")
    names = [b.name for b in blks]
    if len(set(names)) != len(names):
        raise InvalidParameterError("block names must be distinct.")
    cost = [[block_bits(b, f) for f in fmts] for b in blks]
    dmg: list[list[float]] = []
    for b in blks:
        row: list[float] = []
        for f in fmts:
            if (b.name, f.name) not in damage:
                raise InvalidParameterError(f"no predicted damage for block {b.name!r} in format {f.name}.")
            v = float(damage[(b.name, f.name)])
            if not math.isfinite(v):
                raise InvalidParameterError(f"the predicted damage of block {b.name!r} in {f.name} is {v}.")
            row.append(v)
        dmg.append(row)
    n_total = sum(b.n_weights for b in blks)
    cap = budget * n_total
    cheapest = [min(c) for c in cost]
    least = sum(cheapest, Fraction(0))
    if least > cap:
        lo = least / n_total
        raise InfeasibleBudgetError(
            f"a budget of {float(budget):g} bits per weight cannot be met with {', '.join(f.name for f in fmts)}: "
            f"the least achievable is {float(lo):.6g} bits per weight ({lo}), scales counted.", lo)
    # rest[i]: the least bits of blocks i.. (a state that cannot be completed within the cap is dropped)
    rest = [Fraction(0)] * (len(blks) + 1)
    for i in range(len(blks) - 1, -1, -1):
        rest[i] = rest[i + 1] + cheapest[i]
    # frontier: list of (bits, damage, choices) sorted by bits, damage strictly decreasing
    frontier: list[tuple[Fraction, float, tuple[int, ...]]] = [(Fraction(0), 0.0, ())]
    for i in range(len(blks)):
        cand = [(c + cost[i][j], d + dmg[i][j], ch + (j,)) for c, d, ch in frontier for j in range(len(fmts))
                if c + cost[i][j] + rest[i + 1] <= cap]
        cand.sort(key=lambda s: (s[0], s[1], s[2]))
        frontier = []
        for s in cand:
            if not frontier or s[1] < frontier[-1][1]:
                frontier.append(s)
    bits, total, choice = min(frontier, key=lambda s: (s[1], s[0], s[2]))
    assert bits <= cap  # the invariant the tests check independently
    assignment = {b.name: fmts[j].name for b, j in zip(blks, choice)}
    rows = [{"block": b.name, "format": fmts[j].name, "n_weights": b.n_weights, "bits": str(cost[i][j]),
             "bits_per_weight": float(cost[i][j] / b.n_weights), "predicted_damage": dmg[i][j]}
            for i, (b, j) in enumerate(zip(blks, choice))]
    return Allocation(assignment=assignment, total_bits=bits, n_weights=n_total, budget=budget, damage=total,
                      formats=[f.name for f in fmts], blocks=rows)


# -- predicted damage per block from the pre-registered score ------------------------------------

#: How ``physgsa plan`` groups weights into blocks (one format per block).
PER = ("matrix", "depth")


def block_units(model: object, per: str = "depth") -> list[Any]:
    """The blocks of ``model`` as units: each weight matrix (``per="matrix"``), or all matrices at one depth.

    ``"matrix"``: the units of kind ``"matrix"`` of :func:`physgsa.models.units.units` as they
    are (GPT-2's fused ``c_attn`` as its q, k and v rows). ``"depth"``: per depth, one unit named
    ``block<depth>`` made of those matrices' parts, in the order :func:`~physgsa.models.units.units`
    lists them.
    """
    if per not in PER:
        raise InvalidParameterError(f"per must be one of {PER}; got {per!r}.")
    found = [u for u in U.units(model) if u.kind == "matrix"]
    if per == "matrix":
        return found
    by_depth: dict[int, list[Any]] = {}
    for u in found:
        by_depth.setdefault(u.depth, []).append(u)
    return [U.Unit(f"block{d}", us[0].model, d, "matrix", tuple(p for u in us for p in u.parts))
            for d, us in sorted(by_depth.items())]


def plan_blocks(model: object, merged: Sequence[Any] | None = None) -> list[Block]:
    """The :class:`Block` (matrix shapes as (rows, cols), a conv kernel's cols = in * kh * kw) of each merged unit."""
    src = U.weight_source(model)
    out = []
    for u in (block_units(model) if merged is None else merged):
        shapes = tuple((int(w.shape[0]), int(w.size // w.shape[0])) for w, _ in U.unit_matrices(src, u))
        out.append(Block(u.name, shapes))
    return out


@dataclass(frozen=True)
class Prediction:
    """The blocks of a model, ``S`` per (block, format), and the blocks ``S`` cannot see.

    ``unseen``: the blocks whose weights no factor of the chain reads (a stem or a classifier
    outside the residual blocks): their ``S`` is 0 in every format because the score cannot see
    them, not because they are harmless. ``factors`` says which factors ``S`` used.
    """

    blocks: list[Block]
    damage: dict[tuple[str, str], float]
    unseen: tuple[str, ...]
    factors: str


def predict(model: object, formats: str | Iterable[str | Format], *, per: str = "depth",
            merged: Sequence[Any] | None = None, blocks: list[Block] | None = None,
            **sensitivity_params: Any) -> Prediction:
    """The blocks of ``model``, ``S`` per (block, format) with the format applied to the whole block, and the unseen.

    ``S`` is the pre-registered score of docs/validation.md, unchanged.

    ``**sensitivity_params`` go to :func:`physgsa.runs.sensitivity.sensitivity` (``module``,
    ``inputs``, ``what``, ``n_inputs``, ``seed``, compare parameters).
    """
    fmts = parse_formats(formats)
    merged = block_units(model, per) if merged is None else list(merged)  # a caller that has them passes them
    df = sensitivity(model, changes={f.name: f.change for f in fmts}, unit_list=merged, **sensitivity_params)
    damage = {(str(u), str(c)): float(s) for u, c, s in zip(df["unit"], df["change"], df["S"])}
    touched = df.groupby("unit", sort=False)["n_touched_factors"].max()
    unseen = tuple(u.name for u in merged if int(touched[u.name]) == 0)
    return Prediction(plan_blocks(model, merged) if blocks is None else blocks, damage, unseen,
                      str(df.attrs["factors"]))


def block_damage(model: object, formats: str | Iterable[str | Format], **sensitivity_params: Any
                 ) -> tuple[list[Block], dict[tuple[str, str], float]]:
    """The blocks of ``model`` and ``S`` per (block, format): :func:`predict` without the unseen."""
    found = predict(model, formats, **sensitivity_params)
    return found.blocks, found.damage


def _some(names: list[str], most: int = 5) -> str:
    """Up to ``most`` names, then how many more."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def plan_allocation(prediction: Prediction, formats: str | Iterable[str | Format],
                    budget_bits: int | float | str | Fraction) -> Allocation:
    """``physgsa plan``'s choice: the unseen blocks in their widest format, the others by :func:`allocate`.

    A block ``S`` cannot see (:class:`Prediction`) is kept in the format of most bits, since
    nothing says it is safe to narrow; its bits count in the budget. The other blocks share
    what is left: :func:`allocate` at the budget ``(B * n_total - bits_unseen) / n_seen``, which
    is the same exact inequality ``sum bits <= B * n_total``.
    """
    fmts = parse_formats(formats)
    budget = as_budget(budget_bits)
    blks = prediction.blocks
    n_total = sum(b.n_weights for b in blks)
    widest = {b.name: max(fmts, key=lambda f: (block_bits(b, f), -fmts.index(f))) for b in blks
              if b.name in prediction.unseen}
    kept = Fraction(sum((block_bits(b, widest[b.name]) for b in blks if b.name in widest), Fraction(0)))
    seen = [b for b in blks if b.name not in widest]
    if not seen:
        alloc = None
    else:
        n_seen = sum(b.n_weights for b in seen)
        rest = (budget * n_total - kept) / n_seen
        try:
            alloc = allocate(seen, prediction.damage, fmts, rest if rest > 0 else Fraction(1, 10**9))
        except InfeasibleBudgetError:
            if not widest:
                raise
            least = (kept + sum(min(block_bits(b, f) for f in fmts) for b in seen)) / n_total
            raise InfeasibleBudgetError(
                f"a budget of {float(budget):g} bits per weight cannot be met with {', '.join(f.name for f in fmts)} "
                f"when the blocks the score cannot see ({_some(list(widest))}) keep their widest format: the least "
                f"achievable is {float(least):.6g} bits per weight ({least}), scales counted.", least) from None
    rows, assignment, total_bits, total = [], {}, Fraction(0), 0.0
    by_name = {r["block"]: r for r in (alloc.blocks if alloc else [])}
    for b in blks:  # in block order, so the same input gives the same plan
        if b.name in widest:
            f = widest[b.name]
            c = block_bits(b, f)
            row = {"block": b.name, "format": f.name, "n_weights": b.n_weights, "bits": str(c),
                   "bits_per_weight": float(c / b.n_weights), "predicted_damage": prediction.damage[(b.name, f.name)]}
        else:
            row = by_name[b.name]
        rows.append({**row, "seen": b.name not in widest})
        assignment[b.name] = row["format"]
        total_bits += Fraction(row["bits"])
        total += row["predicted_damage"]
    assert total_bits <= budget * n_total  # the invariant the tests check independently
    return Allocation(assignment=assignment, total_bits=total_bits, n_weights=n_total, budget=budget, damage=total,
                      formats=[f.name for f in fmts], blocks=rows)


# -- the plan of a model: ``physgsa plan`` ---------------------------------------------------------

def _budget_param(value: Any, where: str) -> Fraction:
    try:
        return as_budget(value)
    except InvalidParameterError:
        raise InvalidParameterError(f"{where} must be a number of bits per weight above 0 (for example 4.5). "
                                    f"Got {value!r} instead.") from None


def _formats_param(value: Any, where: str) -> list[Format]:
    try:
        return parse_formats(value)
    except (InvalidParameterError, AttributeError, TypeError) as exc:
        raise InvalidParameterError(f"{where} must name formats separated by commas: int3, int4 (groups of 32), "
                                    f"int8 (per output channel), intK:gN, fp16, bf16. Got {value!r} instead "
                                    f"({exc}).") from None


#: The parameters of ``physgsa plan`` (and :func:`physgsa.plan`): defaults, rules and help texts.
PLAN_PARAMS = {
    "bits": Param(..., "any", extra=_budget_param, cli_type=str,
                  help="The budget: the largest average bits per weight over the planned blocks, scales counted "
                       "(e.g. 4.5). Exact: 4.6 means 46/10."),
    "formats": Param("int4,int8", "any", extra=_formats_param, cli_type=str,
                     help="The formats to choose from, comma-separated: int3 and int4 (round-to-nearest in groups "
                          "of 32 along the input axis), int8 (per output channel), intK:gN (groups of N), fp16, "
                          "bf16."),
    "inputs": Param(None, "any", allow_none=True, extra=lambda v, where: str(v),
                    help="A model folder with attention (GPT-2, BERT): a text file of unlabeled sentences, one per "
                         "line, or 'random' (random token ids, flagged). Default: the bundled sentences. The "
                         "bundled models use their own training inputs."),
    "n_inputs": Param(4, "int", low=1, high=64,
                      help="How many unlabeled training inputs a bundled attention model's Jacobian-mode factors "
                           "are averaged over."),
    "seed": Param(0, "int", low=0, help="Seed of the unlabeled inputs and of the Jacobian probes."),
    "per": Param("matrix", "choice", choices=PER,
                 help="The blocks that get one format each: every weight matrix (GPT-2's fused c_attn as its q, k "
                      "and v), or every depth (all matrices of one residual block together)."),
    "apply": Param(False, "bool", help="Also write the planned model's weights to OUT/checkpoint/ "
                                       "(model.safetensors, and config.json where the model has one)."),
}


def _jacobian_inputs(model: Any, src: Any, p: dict[str, Any]) -> dict[str, Any]:
    """What :func:`~physgsa.runs.sensitivity.sensitivity` needs for Jacobian-mode factors of ``model``."""
    if U.architecture(src) not in U.ATTENTION_ARCHS:
        return {}
    if isinstance(model, str) and model in U.TRAINING_INPUTS:
        return {"n_inputs": p["n_inputs"], "seed": p["seed"]}
    if src.config.get("model_type") == "vit":
        raise ModelSourceError(f"{src.name}: a ViT folder needs unlabeled images for its Jacobian-mode factors, "
                               "which plan does not read; the bundled digits-vit has its own.")
    module, tok = load_module(model)
    found, what = encodings(module, tok, p["inputs"], p["seed"])
    return {"module": module, "inputs": found, "what": what, "seed": p["seed"]}


def _checkpoint(src: Any, changed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of ``src``, the planned blocks' replaced by ``changed`` (floats as float32, integers as int64)."""
    out = {}
    for key in sorted(src.keys()):
        code = str(src.dtype(key)).upper().replace("TORCH.", "")
        value = changed[key] if key in changed else src.get(key)
        integer = code.startswith(("I", "U")) or "INT" in code
        out[key] = np.ascontiguousarray(value, dtype=np.int64 if integer else np.float32)
    return out


def _part_text(part: tuple) -> str:
    """``key``, with the rows or columns of the (out, in) matrix a part covers where it is not all of it."""
    key, rows, cols = part
    where = [f"{what} {sl.start}:{sl.stop}" for what, sl in (("rows", rows), ("columns", cols)) if sl is not None]
    return key + (f" ({', '.join(where)})" if where else "")


def plan_model(model: Any, **params: Any) -> PlanResult:
    """One format per block of ``model``, within a bits budget, least summed predicted damage ``S``.

    The blocks are :func:`block_units` (every weight matrix at one depth); the predicted damage of
    block ``b`` in format ``f`` is the pre-registered combined score ``S`` of docs/validation.md
    with ``f`` applied to the whole block (:func:`block_damage`); :func:`allocate` chooses the
    formats (exact knapsack, budget met exactly in rational arithmetic). Weights outside every
    block (embeddings, norms, biases, a classifier head outside the chain) are left as they are
    and not counted in the budget; ``plan.json`` says how many there are.

    Parameters
    ----------
    model : str or WeightSource
        A bundled model name or a model folder / checkpoint physgsa reads (GPT-2, ViT, BERT, the
        torch ResNet, the UNet).
    **params
        Keyword-only, validated against :data:`PLAN_PARAMS`: ``bits`` (required), ``formats``,
        ``inputs``, ``n_inputs``, ``seed``, ``per``, ``apply``.

    Returns
    -------
    PlanResult
        ``document`` (what ``plan.json`` holds) and, with ``apply``, the planned weights.
    """
    if "bits" not in params:
        raise InvalidParameterError("plan needs a budget: bits=B, the largest average bits per weight.")
    p = check_params("plan", PLAN_PARAMS, params)
    fmts: list[Format] = p["formats"]
    src = U.weight_source(model)
    merged_units = block_units(src, p["per"])
    shapes = plan_blocks(src, merged_units)
    least = sum((min(block_bits(b, f) for f in fmts) for b in shapes), Fraction(0)) / sum(b.n_weights for b in shapes)
    if least > p["bits"]:  # refused before any factor is computed
        names = ", ".join(f.name for f in fmts)
        raise InfeasibleBudgetError(f"{spell('bits', params['bits'])} cannot be met with {names}: the least"
                                    f" achievable is {float(least):.6g} bits per weight ({least}), scales counted. "
                                    "Give a larger budget or cheaper formats.", least)
    kw = _jacobian_inputs(model, src, p)
    found = predict(model if isinstance(model, str) else src, fmts, per=p["per"], merged=merged_units, blocks=shapes,
                    **kw)
    blocks, damage = found.blocks, found.damage
    try:
        alloc = plan_allocation(found, fmts, p["bits"])
    except InfeasibleBudgetError as exc:  # said in the terms of the interface that was called
        raise InfeasibleBudgetError(f"{spell('bits', params['bits'])}: {exc} Give a larger budget or cheaper formats.",
                                    exc.minimum) from None
    merged = {u.name: u for u in merged_units}
    by_name = {f.name: f for f in fmts}
    changed = U.changed_together(src, [(merged[b], by_name[f].change) for b, f in alloc.assignment.items()])
    planned = {key for u in merged.values() for key, _, _ in u.parts}
    outside = int(sum(int(np.prod(src.shape(k))) for k in src.keys() if k not in planned))
    n = alloc.n_weights
    uniform = [{"format": f.name, "bits_per_weight": float(sum(block_bits(b, f) for b in blocks) / n),
                "fits": bool(sum(block_bits(b, f) for b in blocks) <= alloc.budget * n),
                "predicted_damage": float(sum(damage[(b.name, f.name)] for b in blocks))} for f in fmts]
    doc = {
        "model": model if isinstance(model, str) else src.name,
        "architecture": U.architecture(src),
        **alloc.to_dict(),
        "score": "S, the pre-registered combined score of docs/validation.md, per block and format",
        "factors": found.factors,
        "unseen": list(found.unseen),
        "predicted": {b.name: {f.name: damage[(b.name, f.name)] for f in fmts} for b in blocks},
        "matrices": {name: [_part_text(part) for part in merged[name].parts] for name in alloc.assignment},
        "uniform": uniform,
        "weights_outside_blocks": outside,
        "parameters": {"bits": str(p["bits"]), "formats": [f.name for f in fmts], "inputs": p["inputs"],
                       "n_inputs": p["n_inputs"], "seed": p["seed"], "per": p["per"],
                       "apply": p["apply"]},
    }
    return PlanResult(document=doc, checkpoint=_checkpoint(src, changed) if p["apply"] else None,
                      config=dict(src.config) if p["apply"] and src.config else None)

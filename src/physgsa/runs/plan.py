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

from ..core.perturb import Change, parse_change
from ..core.validation import InvalidParameterError

__all__ = ["Format", "Block", "Allocation", "InfeasibleBudgetError", "parse_format", "parse_formats", "as_budget",
           "matrix_bits", "block_bits", "allocate", "block_units", "plan_blocks", "block_damage",
           "SCALE_BITS", "DEFAULT_GROUP"]

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

def block_units(model: object) -> list[Any]:
    """Per depth, one unit made of every ``"matrix"`` unit of :func:`physgsa.models.units.units` at that depth.

    The merged unit is named ``block<depth>`` and holds the matrices' parts in the order
    :func:`~physgsa.models.units.units` lists them.
    """
    from ..models import units as U

    by_depth: dict[int, list[Any]] = {}
    for u in U.units(model):
        if u.kind == "matrix":
            by_depth.setdefault(u.depth, []).append(u)
    return [U.Unit(f"block{d}", us[0].model, d, "matrix", tuple(p for u in us for p in u.parts))
            for d, us in sorted(by_depth.items())]


def plan_blocks(model: object, merged: Sequence[Any] | None = None) -> list[Block]:
    """The :class:`Block` (matrix shapes as (rows, cols), a conv kernel's cols = in * kh * kw) of each merged unit."""
    from ..models import units as U

    src = U.weight_source(model)
    out = []
    for u in (block_units(model) if merged is None else merged):
        shapes = tuple((int(w.shape[0]), int(w.size // w.shape[0])) for w, _ in U.unit_matrices(src, u))
        out.append(Block(u.name, shapes))
    return out


def block_damage(model: object, formats: str | Iterable[str | Format], **sensitivity_params: Any
                 ) -> tuple[list[Block], dict[tuple[str, str], float]]:
    """The blocks of ``model`` and ``S`` per (block, format), the format applied to the whole block.

    ``S`` is the pre-registered score of docs/validation.md, unchanged.

    ``**sensitivity_params`` go to :func:`physgsa.runs.sensitivity.sensitivity` (``module``,
    ``inputs``, ``what``, ``n_inputs``, ``seed``, compare parameters).
    """
    from .sensitivity import sensitivity

    fmts = parse_formats(formats)
    merged = block_units(model)
    df = sensitivity(model, changes={f.name: f.change for f in fmts}, unit_list=merged, **sensitivity_params)
    damage = {(str(u), str(c)): float(s) for u, c, s in zip(df["unit"], df["change"], df["S"])}
    return plan_blocks(model, merged), damage

"""The allocation core of ``physgsa plan`` (issue 23, item 3).

Checked against independent computations: the bits of a matrix counted weight by weight and
scale by scale, the budget re-checked with integer arithmetic outside the module, and the
optimum against brute force over every assignment.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from physgsa.core.validation import InvalidParameterError
from physgsa.runs.plan import Block, InfeasibleBudgetError, allocate, as_budget, block_bits, matrix_bits, parse_format


def _count_bits(rows, cols, kbits, group):
    """By hand: every weight costs kbits; walk each row and add a 16-bit scale per group started."""
    total = 0
    for _ in range(rows):
        scales = 0
        for j in range(cols):
            total += kbits
            if group is None:
                if j == 0:
                    scales += 1
            elif j % group == 0:
                scales += 1
        total += 16 * scales
    return total


@pytest.mark.parametrize("rows,cols", [(3, 32), (2, 64), (5, 40), (1, 7), (4, 96)])
def test_bits_formula_against_a_hand_count(rows, cols):
    assert matrix_bits(rows, cols, parse_format("int4")) == _count_bits(rows, cols, 4, 32)
    assert matrix_bits(rows, cols, parse_format("int3")) == _count_bits(rows, cols, 3, 32)
    assert matrix_bits(rows, cols, parse_format("int4:g16")) == _count_bits(rows, cols, 4, 16)
    assert matrix_bits(rows, cols, parse_format("int8")) == _count_bits(rows, cols, 8, None)
    assert matrix_bits(rows, cols, parse_format("fp16")) == 16 * rows * cols
    assert matrix_bits(rows, cols, parse_format("bf16")) == 16 * rows * cols


def test_bits_per_weight_of_the_usual_formats():
    # int4 g32: 4 + 16/32 = 4.5; int8 per channel with 64 inputs: 8 + 16/64 = 8.25
    assert block_bits(Block("b", ((10, 64),)), parse_format("int4")) / 640 == Fraction(9, 2)
    assert block_bits(Block("b", ((10, 64),)), parse_format("int8")) / 640 == Fraction(33, 4)
    assert block_bits(Block("b", (), 96), parse_format("int3")) / 96 == Fraction(7, 2)
    with pytest.raises(InvalidParameterError, match="per-channel"):
        block_bits(Block("b", (), 96), parse_format("int8"))


def test_budget_is_exact_decimal():
    assert as_budget(4.6) == Fraction(46, 10)
    assert as_budget("4.75") == Fraction(19, 4)
    assert as_budget(5) == 5


def _brute(blocks, damage, formats, budget):
    """Every assignment; costs recounted by hand, budget in integers: sum bits * den <= num * sum n."""
    budget = Fraction(budget)
    n = sum(r * c for _, shapes in blocks for r, c in shapes)
    best = None
    for choice in itertools.product(formats, repeat=len(blocks)):
        bits = sum(_count_bits(r, c, *_SPEC[f]) if f not in ("fp16",) else 16 * r * c
                   for (_, shapes), f in zip(blocks, choice) for r, c in shapes)
        if bits * budget.denominator > budget.numerator * n:
            continue
        d = 0.0
        for (name, _), f in zip(blocks, choice):
            d += damage[(name, f)]
        if best is None or d < best[0]:
            best = (d, choice)
    return best


_SPEC = {"int4": (4, 32), "int3": (3, 32), "int8": (8, None)}
_SHAPES = st.lists(st.tuples(st.integers(1, 4), st.sampled_from([8, 32, 40, 64])), min_size=1, max_size=2)


def _instance(draw_blocks, dmg_values, formats):
    blocks = [(f"b{i}", shapes) for i, shapes in enumerate(draw_blocks)]
    damage = {(name, f): dmg_values[(i * len(formats) + j) % len(dmg_values)]
              for i, (name, _) in enumerate(blocks) for j, f in enumerate(formats)}
    return blocks, damage


@seed(20261207)
@settings(max_examples=150, deadline=None, derandomize=True)
@given(shapes=st.lists(_SHAPES, min_size=1, max_size=6),
       dmg=st.lists(st.integers(0, 50).map(float), min_size=1, max_size=18),
       formats=st.sampled_from([("int3", "int4", "int8"), ("int4", "int8"), ("int3", "fp16"), ("int4", "int3")]),
       frac=st.fractions(min_value=0, max_value=1, max_denominator=97))
def test_optimal_against_brute_force_and_budget_met_exactly(shapes, dmg, formats, frac):
    blocks, damage = _instance(shapes, dmg, formats)
    n = sum(r * c for _, s in blocks for r, c in s)
    per = {f: sum(_count_bits(r, c, *_SPEC[f]) if f != "fp16" else 16 * r * c for _, s in blocks for r, c in s)
           for f in formats}
    lo, hi = Fraction(min(per.values()), n), Fraction(max(per.values()), n)
    budget = lo + frac * (hi - lo + 1)
    best = _brute(blocks, damage, formats, budget)
    a = allocate(blocks, damage, ",".join(formats), budget)
    assert best is not None
    # the budget, re-checked in integers outside the module
    bits = sum(_count_bits(r, c, *_SPEC[a.assignment[name]]) if a.assignment[name] != "fp16" else 16 * r * c
               for name, s in blocks for r, c in s)
    assert bits == a.total_bits
    assert bits * budget.denominator <= budget.numerator * n
    # optimal: the damages are integers, so the sums are exact
    assert a.damage == best[0]
    assert a.damage == sum(damage[(name, a.assignment[name])] for name, _ in blocks)


@seed(7)
@settings(max_examples=200, deadline=None, derandomize=True)
@given(counts=st.lists(st.integers(1, 10**7), min_size=1, max_size=40),
       dmg=st.lists(st.floats(0, 1, allow_nan=False), min_size=3, max_size=30),
       budget=st.fractions(min_value=Fraction(7, 2), max_value=Fraction(9, 2), max_denominator=10**6))
def test_budget_never_exceeded_on_many_blocks_given_by_count(counts, dmg, budget):
    formats = ("int3", "int4", "fp16")
    blocks = [(f"b{i}", c) for i, c in enumerate(counts)]
    damage = {(f"b{i}", f): dmg[(3 * i + j) % len(dmg)] for i in range(len(counts)) for j, f in enumerate(formats)}
    a = allocate(blocks, damage, formats, budget)
    # by hand, in units of 1/32 bit: int3 g32 = 3*32 + 16 = 112, int4 g32 = 144, fp16 = 512 per weight
    per32 = {"int3": 112, "int4": 144, "fp16": 512}
    units32 = sum(per32[a.assignment[f"b{i}"]] * c for i, c in enumerate(counts))
    assert units32 * budget.denominator <= 32 * budget.numerator * sum(counts)
    assert Fraction(units32, 32) == a.total_bits


def test_a_budget_that_lies_exactly_on_a_mix_is_met_with_equality():
    # two blocks of 64 weights: int4 (4.5) + int8 per channel over 32 inputs (8.5): mean 6.5 exactly
    blocks = [("a", [(2, 32)]), ("b", [(2, 32)])]
    damage = {("a", "int4"): 10.0, ("a", "int8"): 0.0, ("b", "int4"): 1.0, ("b", "int8"): 0.0}
    a = allocate(blocks, damage, "int4,int8", "6.5")
    assert a.assignment == {"a": "int8", "b": "int4"} and a.bits_per_weight == Fraction(13, 2)
    # one bit in 2^-40 less and it no longer fits: both int4
    a2 = allocate(blocks, damage, "int4,int8", Fraction(13, 2) - Fraction(1, 2**40))
    assert a2.assignment == {"a": "int4", "b": "int4"}


def test_an_infeasible_budget_is_refused_with_the_least_achievable_bits():
    blocks = [("a", [(4, 64)]), ("b", [(4, 32)])]
    damage = {(b, f): 0.0 for b in "ab" for f in ("int4", "int8")}
    with pytest.raises(InfeasibleBudgetError, match=r"least achievable is 4\.5 bits") as e:
        allocate(blocks, damage, "int4,int8", 4.49)
    assert e.value.minimum == Fraction(9, 2)
    assert isinstance(e.value, InvalidParameterError)
    assert allocate(blocks, damage, "int4,int8", 4.5).bits_per_weight == Fraction(9, 2)


def test_missing_or_nan_damage_is_refused():
    with pytest.raises(InvalidParameterError, match="no predicted damage"):
        allocate([("a", 64)], {("a", "int4"): 0.0}, "int4,int3", 8)
    with pytest.raises(InvalidParameterError, match="nan"):
        allocate([("a", 64)], {("a", "int4"): math.nan}, "int4", 8)


transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def test_blocks_and_predicted_damage_of_a_tiny_gpt2():
    from physgsa.runs.plan import block_damage, block_units
    from torch_helpers import tiny_gpt2

    model, inputs = tiny_gpt2()
    merged = block_units(model)
    assert [u.name for u in merged] == ["block0", "block1"]
    assert all(len(u.parts) == 6 for u in merged)  # q, k, v, o, up, down
    blocks, damage = block_damage(model, "int4,int8", inputs=inputs, what="8 seeded ids")
    # by hand: q, k, v, o are 16 x 16, up 64 x 16, down 16 x 64 (out, in)
    assert [b.shapes for b in blocks] == [((16, 16),) * 4 + ((64, 16), (16, 64))] * 2
    assert all(b.n_weights == 4 * 256 + 2 * 1024 for b in blocks)
    assert sorted(damage) == [(f"block{i}", f) for i in (0, 1) for f in ("int4", "int8")]
    assert all(math.isfinite(v) and v > 0 for v in damage.values())
    # by hand: int4 g32 is 5 bits per weight on the 16-input matrices (one 16-bit scale per 16
    # weights) and 4.5 on down (64 inputs: two groups of 32): 5 * 2048 + 4.5 * 1024 = 14848 per
    # block. int8 per channel: 9 bits on the 16-input matrices, 8.25 on down: 9 * 2048 + 8.25 * 1024
    # = 26880. At 7 bits (43008 for both blocks) exactly one block fits int8 (41728): the one whose
    # int8 saves more predicted damage.
    a = allocate(blocks, damage, "int4,int8", 7)
    gain = {b: damage[(b, "int4")] - damage[(b, "int8")] for b in ("block0", "block1")}
    up = max(gain, key=lambda b: gain[b])
    assert a.total_bits == 41728 and a.assignment[up] == "int8" and list(a.assignment.values()).count("int8") == 1
    assert allocate(blocks, damage, "int4,int8", 5).assignment == {"block0": "int4", "block1": "int4"}

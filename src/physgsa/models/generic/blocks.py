"""Block finding: residual blocks and the plain stretches between them, their names, their main
paths, and the modules left out of every factor (with the reason).
"""

from __future__ import annotations

import itertools

from ..sources import ModelSourceError
from .graph import Graph
from .trace import describe_node, module_paths


def find_units(g: Graph) -> list[dict]:
    """Residual blocks and the plain stretches between them, in execution order.

    An addition inside another block's span is part of that block's branch: an elementwise sum
    (``x + 0.044715 x^3`` in a GELU, rotary ``q cos + rot(q) sin``) or a merge of parallel maps
    (mixture-of-experts: ``sum_e g_e E_e(x)``, the experts named in ``u["parallel"]``). One with
    an identity operand and a linear layer on the other (``y + f(y)`` inside a block) is a nested
    residual block, refused.
    """
    adds = g.residual_adds()
    if not adds:
        raise ModelSourceError(f"The generic walker found no residual block in {g.name} (no tensor added to an earlier "
                               "tensor of the same shape on the sample). For a chain of its layers, call "
                               "physgsa.models.generic.walk_chain(model, sample=...).")
    span = {a: set(g.between(g.idom[a], a)) for a in adds}
    outer = {b: next((a for a in adds if a is not b and b in span[a]), None) for b in adds}
    for b, a in outer.items():
        x = g.idom[b]
        if a is not None and x in b.args[:2]:
            other = b.args[1] if b.args[0] is x else b.args[0]
            if n_linear(g, g.between(x, other)):
                raise ModelSourceError(
                    f"{g.name}: the residual block ending at {describe_node(b)} lies inside the block ending at "
                    f"{describe_node(a)}: nested or parallel residual paths. The generic walker reads a sequence of "
                    "blocks.")
    blocks = []
    for a in (a for a in adds if outer[a] is None):
        x = g.idom[a]
        if g.kind.get(x) != "main":
            raise ModelSourceError(f"{g.name}: the residual addition {describe_node(a)} starts at {x.name}, which is "
                                   "not a tensor on the residual path.")
        ops = [o for o in a.args[:2]]
        run = a
        while True:
            users = list(run.users)
            if len(users) == 1 and g.kind.get(users[0]) == "main" and g.is_passthrough(users[0]) \
                    and users[0].args and users[0].args[0] is run and g.data_inputs(users[0]) == [run]:
                run = users[0]
            else:
                break
        merges = [b for b in adds if outer[b] is not None and b in span[a] and g.idom[b] not in b.args[:2]]
        blocks.append({"kind": "residual", "entry": x, "add": a, "exit": run, "operands": ops,
                       "parallel": _parallel(g, merges)})
    for prev, nxt in itertools.pairwise(blocks):
        if not (nxt["entry"] is prev["exit"] or g.dominates(prev["exit"], nxt["entry"])):
            raise ModelSourceError(
                f"{g.name}: the residual block ending at {describe_node(nxt['add'])} starts at {nxt['entry'].name}, "
                f"not after the block ending at {describe_node(prev['add'])}: nested or parallel residual paths. "
                "The generic walker reads a sequence of blocks.")
    units = []
    for k, blk in enumerate(blocks):
        if k and blk["entry"] is not blocks[k - 1]["exit"]:
            units.append({"kind": "plain", "entry": blocks[k - 1]["exit"], "exit": blk["entry"]})
        units.append(blk)
    for u in units:
        u["nodes"] = g.between(u["entry"], u["exit"])
        if u["kind"] == "residual":
            _split_branch(g, u)
    return units


_LINEAR = ("Conv2d", "conv2d", "Linear", "linear", "Conv1D", "addmm")


def n_linear(g: Graph, nodes) -> int:
    return sum(1 for n in nodes if g.op_name(n) in _LINEAR)


def _parallel(g: Graph, merges: list) -> list[str]:
    """The parallel maps that sums of two non-identity paths merge (mixture-of-experts' experts), by
    the modules only each runs in, in execution order; sums of maps without linear layers are not named.
    """
    consumed = {o for m in merges for o in m.args[:2] if o in merges}
    names: list[str] = []
    for m in merges:
        if m in consumed:
            continue
        leaves, stack = [], [m]
        while stack:
            n = stack.pop(0)
            if n in merges:
                stack[:0] = [o for o in n.args[:2] if isinstance(o, g.torch.fx.Node)]
            else:
                leaves.append(n)
        x = g.idom[m]
        paths = [g.between(x, leaf) for leaf in leaves]
        if len(leaves) < 2 or any(not n_linear(g, p) for p in paths):
            continue
        sets = [{q for n in p for q in module_paths(n)} for p in paths]
        for k, mine in enumerate(sets):
            own = mine - set().union(*(t for j, t in enumerate(sets) if j != k))
            top = sorted(q for q in own if not any(q.startswith(o + ".") for o in own))
            names.append("+".join(top) or leaves[k].name)
    return names


def _split_branch(g: Graph, u: dict) -> None:
    x = u["entry"]
    p, q = u["operands"]
    if p is x:
        u["shortcut"], u["branch"] = p, q
    elif q is x:
        u["shortcut"], u["branch"] = q, p
    else:
        np_, nq = n_linear(g, g.between(x, p)), n_linear(g, g.between(x, q))
        u["shortcut"], u["branch"] = (p, q) if np_ < nq else (q, p)
    u["shortcut_nodes"] = [] if u["shortcut"] is x else g.between(x, u["shortcut"])


def name_units(g: Graph, units: list[dict]) -> None:
    """Each unit's name: the outermost modules all of whose operations belong to it."""
    owner = {}
    unit_of = {}
    for k, u in enumerate(units):
        for n in u["nodes"]:
            unit_of[n] = k
    for n in g.nodes:
        if n.op not in ("call_module", "call_function", "call_method") or g.kind[n] not in ("main", "pooled"):
            continue
        for path in module_paths(n):
            owner.setdefault(path, set()).add(unit_of.get(n, -1))
    taken = set()
    for k, u in enumerate(units):
        mine = [path for path, us in owner.items() if us == {k}]
        top = [path for path in mine if not any(path.startswith(o + ".") for o in mine)]
        name = "+".join(top)
        if not name or name in taken:
            name = f"{'residual' if u['kind'] == 'residual' else 'segment'}.{k}"
        taken.add(name)
        u["name"] = name
        u["modules"] = sorted({p for n in u["nodes"] for p in module_paths(n)[-1:]})


def main_nodes(g: Graph, entry, exit_, where: str) -> list:
    """The nodes the linear map from ``entry`` to ``exit_`` runs through; gates' computations excluded."""
    keep, stack = {exit_}, [exit_]
    while stack:
        n = stack.pop()
        if n is entry:
            continue
        for a in g.data_inputs(n):
            if g.kind[a] != "main" or a in keep:
                continue
            if g.pos[a] < g.pos[entry]:
                raise ModelSourceError(f"{g.name}: {where} reads {a.name}, from before its input {entry.name}.")
            keep.add(a)
            stack.append(a)
    keep.discard(entry)
    return sorted(keep, key=g.pos.__getitem__)


def skipped_modules(g: Graph, units: list[dict], used: set, gate_of: dict) -> list[dict]:
    """Every module with weights that is not a linear map of a factor, with the reason."""
    shortcut_of = {n: u["name"] for u in units if u["kind"] == "residual" for n in u["shortcut_nodes"]
                   if n not in used}
    first, last = g.pos[units[0]["entry"]], g.pos[units[-1]["exit"]]
    ran: dict = {}
    for n in g.nodes:
        if n.op in ("call_module", "call_function", "call_method"):
            for path in module_paths(n):
                ran.setdefault(path, []).append(n)
    out = []
    for path, mod in g.model.named_modules():
        if not path or not any(True for _ in mod.parameters(recurse=False)):
            continue
        nodes = ran.get(path)
        if not nodes:
            out.append({"module": path, "reason": "not executed by the sample forward pass"})
            continue
        if any(n in used for n in nodes):
            continue
        gates = [gate_of[n] for n in nodes if n in gate_of]
        cut = [shortcut_of[n] for n in nodes if n in shortcut_of]
        if cut:
            reason = (f"{type(mod).__name__} on the shortcut of {cut[0]}: factor='branch' is the residual branch "
                      "alone")
        elif gates:
            reason = (f"gate of {gates[0]}: frozen at the sample, it enters that factor only as its per-channel scale "
                      "(its weights are not a channel map of the chain)")
        elif all(g.pos[n] <= first for n in nodes):
            reason = f"{type(mod).__name__} in the stem: runs before the first residual block, where the chain starts"
        elif all(g.pos[n] > last for n in nodes):
            reason = f"{type(mod).__name__} in the head: runs after the last residual block, where the chain ends"
        else:
            reason = f"{type(mod).__name__} off the residual path (its output does not reach the next factor)"
        out.append({"module": path, "reason": reason})
    return out

"""The import layers of docs/architecture.md, checked two ways.

``cli/api > report > runs > outputs > models > core``: a module may import its own layer and the
layers below it, never one above; no module imports another in a cycle; and the core loads no
torch, pandas or jinja2. ``lint-imports`` (import-linter, configured in pyproject.toml) checks the
contract in CI; the AST walk below checks the same rule independently of it, over every import
statement of the package, at the top of a file or inside a function, and is itself tested on small
synthetic packages that pass and fail.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

#: Highest first. A module belongs to the first layer one of whose prefixes it is or lies under;
#: a module in no layer (the package root, ``__main__``, compatibility aliases) counts as the top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("physgsa.cli", "physgsa.api", "physgsa.tracking", "physgsa.adapters"),
    ("physgsa.report",),
    ("physgsa.runs",),
    ("physgsa.outputs",),
    ("physgsa.models",),
    ("physgsa.core",),
)

#: What the core must never load (directly or through anything it imports).
HEAVY = ("torch", "pandas", "jinja2", "transformers", "diffusers", "pyarrow")


# --------------------------------------------------------------------------- the checker


def module_names(src: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``src``: dotted name -> file (a package is its ``__init__``)."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom | ast.Import, modules: set[str]) -> set[str]:
    """The package's own modules an import statement loads (``from a import b`` is ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {_longest_module(n, modules) for n in names} - {None}
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = set()
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        found.add(sub if sub in modules else _longest_module(target, modules))
    return found - {None}


def _longest_module(name: str, modules: set[str]) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return None


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its file (top level or in a function)."""
    files = module_names(src, package)
    modules = set(files)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets |= _resolve(name, is_package, node, modules)
        graph[name] = targets - {name}
    return graph


def layer_of(module: str, layers: tuple[tuple[str, ...], ...]) -> int:
    """Index of the module's layer, 0 the top (a module in no layer is at the top)."""
    for i, prefixes in enumerate(layers):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return 0


def upward_imports(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    """Every ``importer -> imported`` edge that runs from a lower layer up to a higher one."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if layer_of(b, layers) < layer_of(a, layers))


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


# --------------------------------------------------------------------------- the checker, tested


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


TOY_LAYERS = (("toy.top",), ("toy.mid",), ("toy.low",))

TOY_GOOD = {
    "toy/__init__.py": "",
    "toy/top.py": "from .mid import b\nimport toy.low.a\n",
    "toy/mid/__init__.py": "from .b import f\n",
    "toy/mid/b.py": "from ..low import a\nfrom toy.low.a import g\n\ndef f():\n    from . import c\n",
    "toy/mid/c.py": "import os\nfrom ..low.a import g\n",
    "toy/low/__init__.py": "",
    "toy/low/a.py": "import json\n\ndef g():\n    return json\n",
}


def test_checker_passes_a_layered_acyclic_package(tmp_path):
    src = _write_package(tmp_path, TOY_GOOD)
    graph = import_graph(src, "toy")
    assert graph["toy.mid.b"] == {"toy.low.a", "toy.mid.c"}  # relative, absolute and in-function imports
    assert graph["toy.top"] == {"toy.mid.b", "toy.low.a"}
    assert upward_imports(graph, TOY_LAYERS) == []
    assert import_cycles(graph) == []


def test_checker_finds_upward_imports_and_cycles_even_inside_functions(tmp_path):
    src = _write_package(tmp_path, {
        **TOY_GOOD,
        # Upward, hidden in a function, and a cycle low.a -> low.d -> low.a.
        "toy/low/a.py": "def g():\n    from ..mid import b\n    from . import d\n",
        "toy/low/d.py": "import toy.low.a\n",
    })
    graph = import_graph(src, "toy")
    assert upward_imports(graph, TOY_LAYERS) == ["toy.low.a -> toy.mid.b"]
    # One strongly connected set: low.a <-> low.d, and the cycle the upward import closes
    # (mid.b -> low.a -> mid.b, and mid.b -> mid.c -> low.a).
    assert import_cycles(graph) == [["toy.low.a", "toy.low.d", "toy.mid.b", "toy.mid.c"]]
    graph["toy.low.a"] = {"toy.low.d"}
    assert upward_imports(graph, TOY_LAYERS) == []
    assert import_cycles(graph) == [["toy.low.a", "toy.low.d"]]


# --------------------------------------------------------------------------- physgsa itself


def test_no_import_runs_up_a_layer():
    """No module of physgsa imports one of a higher layer (anywhere in its file)."""
    upward = upward_imports(import_graph(SRC, "physgsa"), LAYERS)
    assert upward == [], "imports from a lower layer up to a higher one:\n" + "\n".join(upward)


def test_no_import_cycle():
    """No two modules of physgsa import each other, directly or through others."""
    cycles = import_cycles(import_graph(SRC, "physgsa"))
    assert cycles == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_core_loads_no_torch_pandas_or_jinja2():
    """``import physgsa.core`` and every module in it, in a fresh interpreter, loads none of HEAVY."""
    core = sorted(m for m in module_names(SRC, "physgsa") if m == "physgsa.core" or m.startswith("physgsa.core."))
    code = (
        "import importlib, sys\n"
        f"for m in {core!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(' '.join(sorted(h for h in {HEAVY!r} if h in sys.modules)))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [], f"importing physgsa.core loaded {run.stdout.strip()}"


def test_lint_imports_contract_holds():
    """import-linter's contracts in pyproject.toml (layers, core imports, acyclic siblings) pass."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("lint-imports (import-linter, in the dev extra) is not installed")
    run = subprocess.run([exe], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

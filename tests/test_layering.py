"""The import structure the project promises: ``symbolic/`` is sympy and the standard library only, imports flow one way
(symbolic <- constructions <- verify <- verify_constructions / paper_figures / experiments), ``common/`` (errors,
atomic writes) sits below them all and imports nothing of the project, and no module imports itself back through
others. Imports are read from the source (``ast``), so an import inside a function counts like
one at the top of a module."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"common": -1, "symbolic": 0, "constructions": 1, "verify": 2, "verify_constructions": 3, "paper_figures": 3,
          "experiments": 3}
SYMBOLIC_MAY_IMPORT = set(sys.stdlib_module_names) | {"sympy", "symbolic"}


def _name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(name: str, source: str, is_package: bool = False) -> list[tuple[str, int]]:
    """(imported name, line) for every import statement of a module, at any depth; ``from X import y`` gives
    ``X.y`` (a submodule, or an attribute of X: ``resolve`` decides)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                base = name.split(".")[: None if is_package else -1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            out += [(f"{module}.{a.name}" if a.name != "*" else module, node.lineno) for a in node.names]
    return out


def project_modules(root: Path = ROOT, packages=tuple(LAYERS)) -> dict[str, Path]:
    return {_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def resolve(target: str, modules) -> str | None:
    """The longest prefix of ``target`` that is a project module (None: not the project's)."""
    parts = target.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in modules:
            return ".".join(parts[:k])
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[tuple[str, int]]]:
    """module -> {(project module it imports, line)}."""
    graph = {}
    for name, path in modules.items():
        edges = {(resolve(t, modules), line) for t, line in imports(name, path.read_text(), path.name == "__init__.py")}
        graph[name] = {(t, line) for t, line in edges if t is not None and t != name}
    return graph


def layer_violations(graph, modules) -> list[str]:
    out = []
    for name, edges in graph.items():
        for target, line in sorted(edges):
            if LAYERS[target.split(".")[0]] > LAYERS[name.split(".")[0]]:
                out.append(f"{name}:{line} imports {target}")
    return out


def cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    adjacency = {v: sorted({t for t, _ in edges}) for v, edges in graph.items()}

    for start in adjacency:
        if start in index:
            continue
        work = [(start, iter(adjacency[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(adjacency.get(w, ()))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def foreign_imports(name: str, source: str) -> list[str]:
    """Imports of a symbolic module that are neither the standard library, sympy nor symbolic itself."""
    return [f"line {line}: {t}" for t, line in imports(name, source)
            if t.split(".")[0] not in SYMBOLIC_MAY_IMPORT]


# ----------------------------------------------------------------------------------------------------------------


def test_symbolic_source_imports_only_sympy_and_the_standard_library():
    modules = project_modules(packages=("symbolic",))
    assert len(modules) >= 10, sorted(modules)
    bad = {name: foreign_imports(name, path.read_text()) for name, path in modules.items()}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_importing_symbolic_loads_nothing_numeric_and_nothing_of_the_project():
    """In a fresh interpreter, after sympy (and what sympy itself loads), importing every symbolic module adds only
    sympy, symbolic and standard-library modules."""
    names = sorted(project_modules(packages=("symbolic",)))
    code = ("import importlib, json, sys\nimport sympy, sympy.stats\nbefore = set(sys.modules)\n"
            f"for m in {names!r}: importlib.import_module(m)\n"
            "print(json.dumps({'new': sorted(set(sys.modules) - before), 'all': sorted(sys.modules)}))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    new = {m.split(".")[0] for m in loaded["new"]}
    assert "symbolic" in new
    assert new <= SYMBOLIC_MAY_IMPORT, sorted(new - SYMBOLIC_MAY_IMPORT)
    everything = {m.split(".")[0] for m in loaded["all"]}
    assert not everything & ({"numpy", "torch", "scipy"} | set(LAYERS) - {"symbolic"}), sorted(everything)


def test_imports_flow_one_way():
    modules = project_modules()
    assert {n.split(".")[0] for n in modules} == set(LAYERS)
    graph = import_graph(modules)
    assert sum(len(e) for e in graph.values()) > 100  # the graph was read (a parse that found nothing would pass)
    assert layer_violations(graph, modules) == []


def test_no_import_cycle():
    graph = import_graph(project_modules())
    assert cycles(graph) == []
    top = lambda name: name.split(".")[0]  # noqa: E731
    packages = {p: set() for p in LAYERS}
    for name, edges in graph.items():
        packages[top(name)] |= {(top(t), line) for t, line in edges if top(t) != top(name)}
    assert cycles(packages) == []


# The checks above must be able to fail: each rule on a small tree that breaks it.


def test_foreign_imports_are_found_at_any_depth():
    source = ("import math\nimport sympy as sp\nfrom symbolic.blocks import silu\nimport numpy as np\n"
              "def f():\n    from common.errors import require\n    import torch.nn\n")
    assert foreign_imports("symbolic.x", source) == ["line 4: numpy", "line 6: common.errors.require",
                                                     "line 7: torch.nn"]
    assert foreign_imports("symbolic.x", "import math\nfrom sympy import Rational\n") == []


def test_layer_violation_and_cycle_are_found(tmp_path):
    for pkg in LAYERS:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "symbolic" / "law.py").write_text("def f():\n    from verify import recall_law\n")
    (tmp_path / "verify" / "recall_law.py").write_text("from symbolic.law import f\nfrom . import grid\n")
    (tmp_path / "verify" / "grid.py").write_text("from .recall_law import x\n")
    (tmp_path / "constructions" / "a.py").write_text("import symbolic.law\n")
    modules = project_modules(tmp_path)
    graph = import_graph(modules)
    assert graph["verify.grid"] == {("verify.recall_law", 1)}  # relative imports resolve
    assert graph["constructions.a"] == {("symbolic.law", 1)}
    assert layer_violations(graph, modules) == ["symbolic.law:2 imports verify.recall_law"]
    assert cycles(graph) == [["symbolic.law", "verify.grid", "verify.recall_law"]]
    del graph["verify.grid"]
    graph["verify.recall_law"] = {("symbolic.law", 1)}
    assert cycles(graph) == [["symbolic.law", "verify.recall_law"]]
    graph["symbolic.law"] = set()
    assert cycles(graph) == [] and layer_violations(graph, modules) == []

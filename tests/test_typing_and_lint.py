"""The type and lint checks run with the tests, so CI fails on them: mypy
--strict (pyproject.toml's [tool.mypy]) on the whole package, `ruff check` (pyproject.toml's [tool.ruff]) on the package;
and the import graph: no cycle, data flows down the layers (LAYERS), and the node
never imports its test kit."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".mypy_cache"  # a warm cache turns mypy's 9 s into 0.5 s


def _run(*args: str) -> None:
    run = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_package_is_mypy_strict_clean() -> None:
    _run("mypy", "--cache-dir", str(CACHE / "package"))  # strict: pyproject.toml's [tool.mypy]


def test_the_package_is_ruff_clean() -> None:
    _run("ruff", "check", "--no-cache", "pithnode")


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, lazy imports (inside functions) included."""
    pkg_root = ROOT / "pithnode"
    paths = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in pkg_root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join([*base, node.module] if node.module else base)
                targets = [module, *(f"{module}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in paths:  # a name imported from a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def test_the_import_graph_has_no_cycle_and_the_node_does_not_import_the_test_kit() -> None:
    graph = _import_graph()
    assert "pithnode.testing.synth" in graph and graph["pithnode.cli"]  # the walk found the package
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle
    product = {m: d for m, d in graph.items() if not m.startswith("pithnode.testing")}
    assert not {m: d for m, d in product.items() if any(x.startswith("pithnode.testing") for x in d)}


# Data flows down: a module imports only from its own layer or those below it.
LAYERS = [
    ("pithnode", "pithnode.errors", "pithnode.timeutil", "pithnode.workers"),  # plumbing, no pithnode logic
    ("pithnode.core",),  # pure: formats, admission, merge, the ingest decision
    ("pithnode.store",),  # SQL
    ("pithnode.config", "pithnode.identity", "pithnode.lock", "pithnode.net", "pithnode.worker_jobs",
     "pithnode.ingest", "pithnode.views"),  # read, decide, apply; fetch
    ("pithnode.sync",),
    ("pithnode.node",),
    ("pithnode.cli", "pithnode.__main__", "pithnode.testing"),
]


def _layer(module: str) -> int:
    """The layer of the longest prefix naming one (a package names its modules)."""
    best = max((p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def test_data_flows_down_the_layers() -> None:
    graph = _import_graph()
    upward = {f"{m} -> {d}" for m, deps in graph.items() for d in deps if _layer(d) > _layer(m)}
    assert not upward, sorted(upward)

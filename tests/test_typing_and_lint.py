"""The type and lint checks run with the tests, so CI fails on them: `mypy
--strict` on the pure core and every module listed in STRICT, mypy (pyproject.toml's [tool.mypy])
on the whole package, `ruff check` (pyproject.toml's [tool.ruff]) on the package;
and the import graph: no cycle, and the node never imports its test kit."""

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


# Strict already; a module joins once it is clean (the rest get the package's plain check below).
STRICT = [
    "pithnode/core", "pithnode/errors.py", "pithnode/__init__.py", "pithnode/__main__.py", "pithnode/config.py",
    "pithnode/identity.py", "pithnode/lock.py", "pithnode/sync.py", "pithnode/timeutil.py", "pithnode/net",
    "pithnode/cli/__init__.py", "pithnode/cli/common.py", "pithnode/cli/doctor_cmd.py", "pithnode/cli/node_cmds.py",
    "pithnode/cli/sync_cmd.py", "pithnode/cli/verify_cmds.py", "pithnode/node/__init__.py", "pithnode/node/attest.py",
    "pithnode/node/front.py", "pithnode/node/h1.py", "pithnode/node/http.py", "pithnode/node/metrics.py",
    "pithnode/node/poller.py", "pithnode/testing/__init__.py", "pithnode/testing/procs.py",
    "pithnode/testing/synth.py", "pithnode/store", "pithnode/views.py", "pithnode/node/pages.py",
    "pithnode/cli/store_cmds.py", "pithnode/ingest.py", "pithnode/worker_jobs.py", "pithnode/workers.py",
    "pithnode/node/admission.py", "pithnode/node/cache.py", "pithnode/node/merges.py", "pithnode/node/reporter.py",
    "pithnode/node/server.py", "pithnode/node/service.py",
]


def test_the_core_and_the_strict_modules_are_mypy_strict_clean() -> None:
    # imports followed silently: a strict module is checked, what it imports is read for types only
    _run("mypy", "--strict", "--follow-imports=silent", "--cache-dir", str(CACHE / "strict"), *STRICT)


def test_the_package_is_mypy_clean() -> None:
    _run("mypy", "--cache-dir", str(CACHE / "package"))


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

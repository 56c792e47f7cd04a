"""The type and lint checks run with the tests, so CI fails on them: `mypy
--strict` on the pure core and errors.py, mypy (pyproject.toml's [tool.mypy])
on the whole package, `ruff check` (pyproject.toml's [tool.ruff]) on the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".mypy_cache"  # a warm cache turns mypy's 9 s into 0.5 s


def _run(*args: str) -> None:
    run = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_core_is_mypy_strict_clean() -> None:
    _run("mypy", "--strict", "--cache-dir", str(CACHE / "strict"), "pithnode/core", "pithnode/errors.py")


def test_the_package_is_mypy_clean() -> None:
    _run("mypy", "--cache-dir", str(CACHE / "package"))


def test_the_package_is_ruff_clean() -> None:
    _run("ruff", "check", "--no-cache", "pithnode")

"""The house rules that keep the code readable, enforced: one-way package dependencies, short modules.

The import contracts live in pyproject.toml (``[tool.importlinter]``) and are run here with
import-linter; a second test plants a wrong import in a copy of the tree and checks that the same
contracts catch it, so the check cannot silently pass.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dsgd", "streaming", "batch")
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]

#: Longest module (lines) and function (lines without the docstring) allowed in the library and the jobs.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
#: Functions allowed to be longer: the compiled SGD loop keeps its branches inline for speed.
LONG_FUNCTIONS = {"dsgd/core/kernel.py::_run_sorted"}
#: Functions being split in a branch that reworks them (none now; keep it empty on main).
_SPLITTING: set[str] = set()


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"})


def test_package_dependencies_point_one_way():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("module, wrong_import", [
    ("dsgd/core/hashing.py", "import dsgd.store.factor_store"),  # core must not reach up
    ("dsgd/engines/local.py", "import pyspark.sql"),  # the local engine needs no JVM
    ("dsgd/store/tables.py", "import streaming.trainer"),  # the library never imports a job
    ("batch/blend.py", "import streaming.trainer"),  # jobs are independent
    ("dsgd/serve/loader.py", "import pyspark.sql"),  # the server needs no JVM
    ("dsgd/serve/state.py", "import dsgd.store.factor_store"),  # nor the Spark-side store
])
def test_a_wrong_import_breaks_a_contract(tmp_path, module, wrong_import):
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{wrong_import}  # planted by the test\n")
    out = _lint(tmp_path)
    assert out.returncode != 0, out.stdout
    assert "BROKEN" in out.stdout and module.removesuffix(".py").replace("/", ".") in out.stdout


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_modules_are_short():
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function without its docstring (documentation does not make a function long)."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str) and len(body) > 1:
        return fn.end_lineno - body[1].lineno + 1 + (body[0].lineno - fn.lineno)
    return fn.end_lineno - fn.lineno + 1


def test_functions_are_short():
    long = {}
    for p in _sources():
        rel = str(p.relative_to(ROOT))
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = _code_lines(node)
                if n > MAX_FUNCTION_LINES and f"{rel}::{node.name}" not in LONG_FUNCTIONS | _SPLITTING:
                    long[f"{rel}::{node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (give their steps names): {long}"

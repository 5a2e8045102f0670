"""The code stays ruff- and mypy-clean, and its parts import only what they may."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import REPO_ROOT

PACKAGE = REPO_ROOT / "cerebro_db"
HARNESSES = PACKAGE / "testing"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True)


def test_ruff() -> None:
    for command in (("ruff", "check", "."), ("ruff", "format", "--check", ".")):
        result = run(*command)
        assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def package_of(path: Path) -> str:
    """The dotted package a module of the checkout is in (``cerebro_db/backends/local.py``: ``cerebro_db.backends``)."""
    return ".".join(path.resolve().relative_to(REPO_ROOT).parent.parts)


def imports_of(path: Path, forbidden: str, package: str | None = None) -> list[str]:
    """The modules ``path`` imports (at the top or inside a function) that are ``forbidden`` or in it; relative
    imports are resolved against ``package`` (default: where ``path`` is in the checkout)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # `from ..testing import x` in cerebro_db/backends/: cerebro_db.testing
                parts = (package if package is not None else package_of(path)).split(".")
                module = ".".join([*parts[: len(parts) - node.level + 1], *([module] if module else [])])
            found.add(module)  # `from cerebro_db import testing` names the package in the alias
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return sorted(name for name in found if name == forbidden or name.startswith(forbidden + "."))


def runtime_files() -> Iterator[Path]:
    """What runs for users: the package without its test harnesses, and the dashboard."""
    yield from (path for path in PACKAGE.rglob("*.py") if HARNESSES not in path.parents)
    yield from (REPO_ROOT / "ui").rglob("*.py")


def test_the_runtime_never_imports_the_test_harnesses() -> None:
    offenders = {str(path): found for path in runtime_files() if (found := imports_of(path, "cerebro_db.testing"))}
    assert offenders == {}


def test_the_runtime_never_imports_the_dashboard() -> None:
    offenders = {
        str(path): found
        for path in PACKAGE.rglob("*.py")
        if (found := imports_of(path, "cerebro_ui") + imports_of(path, "ui"))
    }
    assert offenders == {}


def test_the_code_in_the_server_never_imports_the_client() -> None:
    offenders = {
        str(path): found for path in (REPO_ROOT / "plpy").rglob("*.py") if (found := imports_of(path, "cerebro_db"))
    }
    assert offenders == {}


@pytest.mark.parametrize(
    "source",
    [
        "from cerebro_db.testing import faults\n",
        "from cerebro_db import client, testing\n",
        "import cerebro_db.testing.verify as verify\n",
        "def harness():\n    from cerebro_db.testing.clusters import temporary_cluster\n    return temporary_cluster\n",
        "from .testing import faults\n",
        "from ..testing.verify import replay\n",
        "from .. import testing\n",
    ],
)
def test_the_import_check_finds_a_harness_import(tmp_path: Path, source: str) -> None:
    module = tmp_path / "bad.py"
    module.write_text(source)
    # As if the module were cerebro_db/backends/bad.py (relative imports resolve against its package).
    package = "cerebro_db" if source.startswith("from .testing") else "cerebro_db.backends"
    assert imports_of(module, "cerebro_db.testing", package) != []


def test_the_import_check_passes_a_module_without_one(tmp_path: Path) -> None:
    module = tmp_path / "good.py"
    module.write_text("import cerebro_db.testingground\nfrom cerebro_db import client\nfrom .testing import x\n")
    # A longer name, or a relative import of a sibling package's own `testing` (cerebro_db.backends.testing).
    assert imports_of(module, "cerebro_db.testing", "cerebro_db.backends") == []

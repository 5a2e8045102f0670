"""The built wheel carries everything cerebro-db runs on, and works from outside the checkout; the editable
install keeps finding the checkout.

The venvs come from /usr/bin/python3 (the interpreter PL/Python runs) without downloading anything: the wheel
is installed without dependencies, which come from this venv's site-packages through ``$PYTHONPATH`` (a plain
path, which runs no editable-install finder: cerebro_db must come from the wheel). The server's PL/Python
gets ``$PYTHONPATH`` after the venv's own packages. Everything lives in directories the server's OS user can
read (as root, the server runs as ``postgres``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cerebro_db import sample_data
from tests import REPO_ROOT

#: What a source tree holds besides the sources: never copied into the build.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", ".cerebro", "build", "*.egg-info", "__pycache__", ".*_cache")
PATHS = "from cerebro_db import cluster; print(json.dumps([str(p) for p in (cluster.PLPY_PATH, cluster.UI_DIR)]))"

SHOW_WORKLOADS_PAGE = """
import os
from streamlit.testing.v1 import AppTest
from cerebro_db.cluster import UI_DIR
os.environ["CEREBRO_DSN"] = "{dsn}"
app = AppTest.from_file(str(UI_DIR / "app.py"), default_timeout=60)
app.run()
app.switch_page("views/workloads.py")
app.run()
assert not app.exception, app.exception
print(list(app.dataframe[0].value["workload"]))
"""


def readable_tempdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    root = readable_tempdir("cerebro-package-")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def source(scratch: Path) -> Path:
    """A copy of the checkout: building leaves build/ and *.egg-info behind, and a stale build/ would ship."""
    copy = scratch / "source"
    shutil.copytree(REPO_ROOT, copy, ignore=NOT_SOURCES)
    return copy


def pip(*args: str | Path) -> None:
    """This venv's pip, offline (setuptools, for building, from this venv too)."""
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *map(str, args), "--no-index"]
    result = subprocess.run(argv, env=environment(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(source: Path, scratch: Path) -> Path:
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", scratch / "dist", source)
    (built,) = (scratch / "dist").glob("cerebro_db-*.whl")
    return built


def venv(path: Path, *pip_args: str | Path) -> Path:
    """A venv from /usr/bin/python3 with ``pip_args`` installed, without dependencies; its python."""
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    pip("--python", python, "install", "--no-deps", *pip_args)
    return python


def environment(**overrides: str) -> dict[str, str]:
    """This venv's packages as dependencies; no cluster or database chosen."""
    env = {key: value for key, value in os.environ.items() if key not in ("CEREBRO_HOME", "CEREBRO_DSN")}
    return {**env, "PYTHONPATH": sysconfig.get_paths()["purelib"], **overrides}


def test_the_wheel_carries_the_code_sql_migrations_and_dashboard(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())

    def shipped(directory: str, pattern: str, package: str) -> set[str]:
        files = (REPO_ROOT / directory).glob(pattern)
        return {f"{package}/{file.relative_to(REPO_ROOT / directory).as_posix()}" for file in files}

    expected = (
        shipped("cerebro_db", "**/*.py", "cerebro_db")  # the migrations' env.py and versions among them
        | shipped("cerebro_db", "**/*.sql", "cerebro_db")
        | {"cerebro_db/alembic.ini", "cerebro_db/migrations/script.py.mako", "cerebro_db/py.typed"}
        | shipped("plpy/cerebro_plpy", "**/*.py", "cerebro_plpy")
        | shipped("ui", "**/*.py", "cerebro_ui")
    )
    assert {"cerebro_db/sql/99_privileges.sql", "cerebro_ui/app.py", "cerebro_ui/views/workloads.py"} <= expected
    assert expected - names == set()


@pytest.mark.slow
def test_the_installed_wheel_runs_a_workload_from_an_empty_directory(wheel: Path, scratch: Path) -> None:
    python = venv(scratch / "venv", wheel)
    bin_dir = python.parent
    project = readable_tempdir("cerebro-project-")  # outside the checkout, empty

    def run(*argv: str) -> str:
        result = subprocess.run(argv, cwd=project, env=environment(), capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{' '.join(argv)} failed: {result.stdout}{result.stderr}"
        return result.stdout + result.stderr

    def cerebro_db(*args: str) -> str:
        return run(str(bin_dir / "cerebro-db"), *args)

    try:
        site_packages = Path(run(str(python), "-c", "import cerebro_db; print(cerebro_db.__file__)")).parent.parent
        assert site_packages.is_relative_to(scratch / "venv")
        plpy_path, ui_dir = map(Path, json.loads(run(str(python), "-c", f"import json; {PATHS}")))
        assert (plpy_path, ui_dir) == (site_packages, site_packages / "cerebro_ui")
        assert "cluster running at" in cerebro_db("up", "--segments", "2")
        assert (project / ".cerebro" / "cluster.json").exists()  # an installed package's home: here
        # The server's PL/Python trains with the wheel's cerebro_plpy.
        imported = cerebro_db(
            "psql", "-c", "DO $$ import cerebro_plpy; plpy.notice(cerebro_plpy.__file__) $$ LANGUAGE plpython3u"
        )
        assert f"NOTICE:  {site_packages / 'cerebro_plpy' / '__init__.py'}" in imported
        with psycopg.connect(cerebro_db("dsn").strip()) as conn:
            x, y = sample_data.synthetic_tabular(200, 4, 3)
            sample_data.load_tabular_table(conn, "blobs", x, y)
            conn.execute("SELECT * FROM prepare_dataset('blobs', 'blobs', 'label', '{f0,f1,f2,f3}')")
            space = {"lr": [0.01, 0.03], "hidden_units": 8}
            row = conn.execute(
                "SELECT run_model_selection('blobs', 'mlp', %s, max_epochs => 1)", [json.dumps(space)]
            ).fetchone()
            assert row is not None
        leaderboard = cerebro_db("wait", str(row[0]))  # the background scheduler `up` started, from the wheel
        assert len(re.findall(r"^ *\d+ \| +\d+ \| \{.*\} +\| completed +\| +1 \|", leaderboard, re.M)) == 2
        # The dashboard as `cerebro-db ui` runs it: the wheel's app.py, its pages importing `common` beside it.
        shown = run(str(python), "-c", SHOW_WORKLOADS_PAGE.format(dsn=cerebro_db("dsn").strip()))
        assert f"[{row[0]}]" in shown, shown  # the workloads table lists it, alone
    finally:  # what failed stays the test's failure: down only cleans up
        subprocess.run([bin_dir / "cerebro-db", "down"], cwd=project, env=environment(), capture_output=True)
        shutil.rmtree(project, ignore_errors=True)


def test_an_editable_install_finds_the_checkout(source: Path, scratch: Path) -> None:
    python = venv(scratch / "editable", "--no-build-isolation", "-e", source)
    result = subprocess.run(
        [str(python), "-c", f"import json; {PATHS}; print(cluster.default_home())"],
        cwd=scratch,
        env=environment(PYTHONPATH=""),  # nothing but the editable install: its finder maps the checkout
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    paths, home = result.stdout.splitlines()
    assert json.loads(paths) == [str(source / "plpy"), str(source / "ui")]
    assert home == str(source / ".cerebro")

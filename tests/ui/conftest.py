"""Dashboard pages run with AppTest against the session's cluster (or an empty database beside it), and Chromium."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, sync_playwright
from streamlit.testing.v1 import AppTest

from cerebro_db import install
from cerebro_db.cluster import UI_DIR, ClusterConfig
from tests.conftest import TINY_CNN, launch

APP = UI_DIR / "app.py"
# The pages import their helpers (common, search_space_editor) from beside app.py, as Streamlit runs them.
sys.path.insert(0, str(APP.parent))


def open_page(page: str, **query: str) -> AppTest:
    """The app at ``views/<page>.py`` (as the navigation runs it), after its first run."""
    app = AppTest.from_file(str(APP), default_timeout=60)
    app.query_params.update(query)
    app.run()  # st.navigation registers the pages (and their url paths) on the first run
    app.switch_page(f"views/{page}.py")
    app.run()
    assert not app.exception, app.exception
    return app


@pytest.fixture(autouse=True)
def dashboard_dsn(dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CEREBRO_DSN", dsn)
    return dsn


@pytest.fixture(scope="session")
def empty_dsn(cluster: ClusterConfig) -> Iterator[str]:
    """A database with cerebro-db installed and nothing in it, for the empty states."""
    install.create_database(cluster.dsn("postgres"), "ui_empty")
    install.install(cluster.dsn("ui_empty"), segments=2)
    yield cluster.dsn("ui_empty")


def drawn(app: AppTest) -> list[list[str]]:
    """The configs each learning-curve chart draws (its colour scale's domain); other charts are left out."""
    specs = [json.loads(chart.proto.spec) for chart in app.get("vega_lite_chart")]
    return [
        spec["layer"][0]["encoding"]["color"]["scale"]["domain"]
        for spec in specs
        if spec.get("title") in ("loss", "accuracy")
    ]


CHROMIUM = Path("/usr/bin/chromium")  # Debian's (install.sh); Playwright cannot download its own here


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "no /usr/bin/chromium: ./install.sh installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


def named_workload(conn: psycopg.Connection[Any], dataset: str, name: str, *, epochs: int) -> tuple[int, int]:
    """A one-config workload called ``name``; returns it and its config."""
    workload = launch(conn, dataset, {"lr": [0.003], **TINY_CNN}, epochs=epochs)
    conn.execute("UPDATE workloads SET name = %s WHERE workload_id = %s", [name, workload])
    row = conn.execute("SELECT config_id FROM configs WHERE workload_id = %s", [workload]).fetchone()
    assert row is not None
    return workload, row[0]

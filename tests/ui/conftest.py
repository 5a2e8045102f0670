"""Dashboard pages run with AppTest against the session's cluster (or an empty database beside it)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from cerebro_db import install
from cerebro_db.cluster import UI_DIR, ClusterConfig

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

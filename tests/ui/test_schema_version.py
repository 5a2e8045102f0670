"""The dashboard on a database whose schema is behind: it says which command upgrades it, and shows nothing else."""

from __future__ import annotations

import pytest

from cerebro_db import install, migrate
from cerebro_db.cluster import ClusterConfig
from tests.conftest import unique
from tests.ui.conftest import open_page
from tests.ui.test_pages import texts


def test_a_stale_schema_is_named_with_its_upgrade(cluster: ClusterConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = cluster.dsn(unique("ui_stale"))
    install.create_database(cluster.dsn("postgres"), dsn.rsplit("/", 1)[1])
    install.install(dsn, segments=1)
    migrate.downgrade(dsn, "-1")  # as a database the previous release installed
    monkeypatch.setenv("CEREBRO_DSN", dsn)
    errors = [error.value for error in open_page("workloads").error]
    assert len(errors) == 1 and errors[0].startswith("The dashboard cannot use this database:"), errors
    assert "`cerebro-db up`" in errors[0]
    install.install(dsn)  # upgraded: the refusal was not cached
    app = open_page("workloads")
    assert not app.error and "No workloads yet — launch one." in texts(app)

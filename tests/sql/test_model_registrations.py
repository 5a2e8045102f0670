"""register_model's audit (issue 15, item 6): who registered which script, when, from where; an admin, who may
register, can neither rewrite nor forge it, and a user cannot read it."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import psycopg
import pytest
from psycopg import errors

from cerebro_db import install
from cerebro_db.cluster import ClusterConfig
from tests.conftest import unique
from tests.plpy.test_custom import GOOD


def test_a_registration_leaves_an_audit_row_the_admin_cannot_rewrite(
    cluster: ClusterConfig, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    admin, user = unique("judy"), unique("ken")
    admin_dsn = dataclasses.replace(cluster, user=admin, password=install.add_user(dsn, admin, admin=True)).dsn()
    user_dsn = dataclasses.replace(cluster, user=user, password=install.add_user(dsn, user)).dsn()
    model = unique("audited_net")
    with psycopg.connect(admin_dsn, autocommit=True) as judy:
        judy.execute("SELECT register_model(%s, %s)", [model, GOOD])
        row = judy.execute(
            "SELECT registered_by, session_role, client_addr IS NOT NULL, source_sha256, entry_point,"
            " registered_at <= now() FROM model_registrations WHERE name = %s",
            [model],
        ).fetchall()
        assert row == [(admin, admin, True, hashlib.sha256(GOOD.encode()).hexdigest(), "create_model", True)]
        for attack in [
            "UPDATE model_registrations SET registered_by = 'someone else'",
            "DELETE FROM model_registrations",
            "TRUNCATE model_registrations",
            "INSERT INTO model_registrations (name, entry_point, source_sha256, registered_by)"
            " VALUES ('forged', 'create_model', 'x', 'someone else')",
            "ALTER TABLE model_registrations DISABLE TRIGGER ALL",
        ]:
            with pytest.raises((errors.InsufficientPrivilege, errors.WrongObjectType)):
                judy.execute(attack)
    with psycopg.connect(user_dsn, autocommit=True) as ken, pytest.raises(errors.InsufficientPrivilege):
        ken.execute("SELECT * FROM model_registrations")
    assert conn.execute("SELECT count(*) FROM model_registrations WHERE name = %s", [model]).fetchone() == (1,)


def test_a_refused_registration_leaves_no_audit_row(conn: psycopg.Connection[Any]) -> None:
    model = unique("broken_net")
    with pytest.raises(psycopg.Error):
        conn.execute("SELECT register_model(%s, 'def create_model(params):\n    return None\n')", [model])
    assert conn.execute("SELECT count(*) FROM model_registrations WHERE name = %s", [model]).fetchone() == (0,)

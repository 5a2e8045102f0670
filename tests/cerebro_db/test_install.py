"""The installer and migrations against the real server."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
from alembic.script import ScriptDirectory

from cerebro_db import install, migrate
from cerebro_db.cluster import ClusterConfig
from tests import REPO_ROOT


def test_install_is_idempotent_and_sets_up_the_database(cluster: ClusterConfig, conn: psycopg.Connection[Any]) -> None:
    install.install(cluster.dsn())  # a second time: nothing breaks, nothing duplicated
    assert conn.execute("SHOW search_path").fetchone() == ("public, cerebro",)
    assert conn.execute("SELECT count(*) FROM segments").fetchone() == (2,)
    assert conn.execute("SELECT extname FROM pg_extension WHERE extname = 'plpython3u'").fetchone()
    functions = {
        r[0]
        for r in conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'cerebro'"
        )
    }
    assert {"prepare_dataset", "run_model_selection", "claim_unit", "run_unit"} <= functions
    unpinned = conn.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'cerebro' AND NOT coalesce('search_path=cerebro, pg_temp' = ANY(p.proconfig), false)"
    ).fetchall()
    # A procedure that commits may not have SET: wait_for_workload qualifies every name instead. A SQL function
    # with SET is never inlined: suggestion_is_live, read per row by the suggestions view, names no object.
    assert sorted(unpinned) == [("suggestion_is_live",), ("wait_for_workload",)]


def test_models_and_migrations_agree(cluster: ClusterConfig) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "cerebro_db/alembic.ini", "check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={"CEREBRO_DSN": cluster.dsn(), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_upgrade_downgrade_upgrade(cluster: ClusterConfig) -> None:
    install.create_database(cluster.dsn("postgres"), "migration_test")
    dsn = cluster.dsn("migration_test")
    migrate.upgrade(dsn)
    migrate.downgrade(dsn, "base")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('cerebro.configs')").fetchone() == (None,)
    install.install(dsn, segments=1)  # upgrade again, then the API on top
    with psycopg.connect(dsn) as conn:
        head = ScriptDirectory.from_config(migrate.alembic_config(dsn)).get_current_head()
        assert conn.execute("SELECT version_num FROM cerebro.alembic_version").fetchone() == (head,)
        assert conn.execute("SELECT count(*) FROM cerebro.leaderboard").fetchone() == (0,)


def test_a_backend_that_trained_runs_a_costly_query_without_jit(cluster: ClusterConfig) -> None:
    """TensorFlow and the LLVM JIT in one backend: SIGSEGV in free() (the server restarts). The install turns JIT
    off for the database; a session that asks for JIT at any cost still gets none, and lives."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        assert conn.execute("SHOW jit").fetchone() == ("off",)
        conn.execute(
            "DO LANGUAGE plpython3u $$\n"
            "import numpy as np\n"
            "from cerebro_plpy import training\n"
            "training.tensorflow({})\n"
            "import keras\n"
            "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation='softmax')])\n"
            "model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')\n"
            "model.fit(np.zeros((8, 4)), np.zeros(8), epochs=1, verbose=0)\n"
            "$$"
        )
        conn.execute("SET jit_above_cost = 0")
        plan = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT sum(g * 2 + 1) FROM generate_series(1, 1000) g"
        ).fetchone()
        assert plan is not None and "JIT" not in plan[0][0], plan
        assert conn.execute("SELECT sum(g) FROM generate_series(1, 1000) g").fetchone() == (500500,)

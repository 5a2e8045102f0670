"""Bad input across the SQL API: a clear error naming the bad value, and nothing half-written.

(prepare_dataset's and run_model_selection's own tables of bad arguments live beside their tests.)
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import psycopg.sql
import pytest
from psycopg import errors

from tests.conftest import TINY_CNN

Session = psycopg.Connection[Any]

#: Rows that no refused call may leave behind (or change).
TABLES = ["datasets", "workloads", "configs", "config_events", "model_states", "epoch_metrics"]


def snapshot(conn: Session) -> list[Any]:
    """A digest of every row of TABLES."""
    digest = psycopg.sql.SQL("SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} t")
    return [conn.execute(digest.format(psycopg.sql.Identifier(table))).fetchone() for table in TABLES]


@pytest.fixture(scope="module")
def stopped(dsn: str, fashion_2seg: str) -> dict[str, int]:
    """A workload with one config that nothing trains (stopped), to aim bad calls at."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        workload = conn.execute(
            "SELECT run_model_selection(%s, 'cnn', %s)", [fashion_2seg, json.dumps({"lr": [0.01], **TINY_CNN})]
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])
        config = conn.execute("SELECT config_id FROM configs WHERE workload_id = %s", [workload]).fetchone()[0]  # type: ignore[index]
    return {"workload": workload, "config": config}


CASES = [
    ("SELECT clone_config(987654)", "unknown config 987654"),
    ("SELECT clone_config({config}, '[1]')", "overrides must be a JSON object, got [1]"),
    ("SELECT clone_config({config}, '{{\"max_epochs\": 0}}')", "clone max_epochs must be a number >= 1, got 0"),
    ("SELECT clone_config({config}, '{{\"filters\": 8}}')", "overrides ['filters'] would change the model's variables"),
    ("SELECT add_config(987654, '{{}}')", "unknown workload 987654"),
    ("INSERT INTO configs (workload_id, params) VALUES (987654, '{{}}')", "unknown workload 987654"),
    ("SELECT add_config({workload}, '{{\"momentum\": 0.9}}')", "unknown hyper-parameter 'momentum'"),
    ('SELECT add_config({workload}, \'{{"lr": "fast"}}\')', "lr must be a number, got 'fast'"),
    ("SELECT add_config({workload}, '{{\"batch_size\": 0}}')", "batch_size must be >= 1, got 0"),
    ('SELECT add_config({workload}, \'{{"optimizer": "lbfgs"}}\')', "optimizer must be one of"),
    ("UPDATE configs SET status = 'paused' WHERE config_id = {config}", "cannot change status from stopped to paused"),
    ("UPDATE configs SET status = 'completed' WHERE config_id = {config}", "from stopped to completed"),
    ("UPDATE configs SET params = '{{}}' WHERE config_id = {config}", "only status and max_epochs can be changed"),
    ("UPDATE configs SET max_epochs = 0 WHERE config_id = {config}", "max_epochs must be at least 1"),
    ("UPDATE workloads SET status = 'completed' WHERE workload_id = {workload}", "from stopped to completed"),
    ("UPDATE workloads SET unit_timeout = '100 days' WHERE workload_id = {workload}", "at most 24 days, got 100 days"),
    ("SELECT run_model_selection({dataset}, 'cnn', '[1, 2]')", "search_space must be a non-empty JSON object"),
    ("SELECT run_model_selection({dataset}, 'cnn', 'null')", "search_space must be a non-empty JSON object"),
    ("SELECT run_model_selection({dataset}, 'cnn', '{{\"lr\": [-0.1]}}')", "lr must be >= 1e-12, got -0.1"),
    ("SELECT run_model_selection({dataset}, 'mlp', '{{\"hidden_units\": [1.5]}}')", "must be an integer, got 1.5"),
    ("SELECT run_model_selection({dataset}, 'cnn', '{{\"batch_size\": {{\"choices\": []}}}}')", "got []"),
    (
        "SELECT run_model_selection({dataset}, 'cnn', '{{\"lr\": {{\"min\": 0.1}}}}', procedure => 'random',"
        " num_configs => 2)",
        "search_space['lr'] has keys ['min']",
    ),
    (
        "SELECT run_model_selection({dataset}, 'cnn', '{{\"lr\": [0.1]}}', procedure => 'hyperband', num_configs => 0)",
        "needs num_configs >= 1, got 0",
    ),
    ("SELECT run_model_selection({dataset}, 'cnn', '{{\"lr\": [0.1]}}', unit_timeout => '0 s')", "unit_timeout must"),
    (
        "SELECT run_model_selection({dataset}, 'cnn', '{{\"lr\": [0.1]}}', warm_start => true)",
        "needs a parent_workload",
    ),
    ("SELECT run_model_selection(NULL, 'cnn', '{{}}')", "unknown dataset NULL"),
]


@pytest.mark.parametrize(("statement", "message"), CASES)
def test_refused_with_the_bad_value_named_and_nothing_written(
    conn: Session, stopped: dict[str, int], fashion_2seg: str, statement: str, message: str
) -> None:
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(statement.format(dataset=f"'{fashion_2seg}'", **stopped))
    assert isinstance(raised.value, errors.InvalidParameterValue | errors.UndefinedObject), raised.value
    assert message in (raised.value.diag.message_primary or ""), raised.value.diag.message_primary
    assert "Traceback" not in str(raised.value)
    assert snapshot(conn) == before


#: Refusals and the hint each gets: the roster for a bad param value, not for the search space's form, a
#: procedure's arguments or a clone's overrides.
HINTS = [
    ("SELECT add_config({workload}, '{{\"momentum\": 0.9}}')", "FROM roster"),
    ("SELECT run_model_selection({dataset}, 'cnn', '{{\"lr\": [-0.1]}}')", "FROM roster"),
    ("SELECT run_model_selection({dataset}, 'nope', '{{\"lr\": [0.1]}}')", "FROM registered_models"),
    ("SELECT run_model_selection({dataset}, 'cnn', '[1, 2]')", "a search_space maps each hyper-parameter"),
    ("SELECT run_model_selection({dataset}, 'cnn', '{{\"lr\": {{\"max\": 1}}}}')", "a search_space maps"),
    (
        "SELECT run_model_selection({dataset}, 'cnn', '{{\"lr\": [0.1]}}', procedure => 'random')",
        "procedure 'grid' takes lists of choices",
    ),
    ("SELECT clone_config({config}, '{{\"filters\": 8}}')", "a clone continues its source's weights"),
]


@pytest.mark.parametrize(("statement", "hint"), HINTS)
def test_each_refusal_gets_a_hint_that_fits(
    conn: Session, stopped: dict[str, int], fashion_2seg: str, statement: str, hint: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue) as raised:
        conn.execute(statement.format(dataset=f"'{fashion_2seg}'", **stopped))
    given = raised.value.diag.message_hint or ""
    assert hint in given, given
    assert ("roster" in given) == (hint == "FROM roster" or "registered_models" in hint), given


def test_names_with_quotes_semicolons_and_unicode_are_data_not_sql(conn: Session) -> None:
    table = 'Odd "table"; DROP TABLE configs; --'
    conn.execute(
        psycopg.sql.SQL("CREATE TABLE {} ({} int, {} real, {} real)").format(
            psycopg.sql.Identifier(table),
            psycopg.sql.Identifier("label'); --"),
            psycopg.sql.Identifier("x'1"),
            psycopg.sql.Identifier("é ü 🚀"),
        )
    )
    conn.execute(
        psycopg.sql.SQL("INSERT INTO {} SELECT g % 2, g, g * 2 FROM generate_series(1, 40) g").format(
            psycopg.sql.Identifier(table)
        )
    )
    dataset = "données'); DROP TABLE workloads; --"
    conn.execute(
        "SELECT * FROM prepare_dataset(%s, %s, %s, %s)",
        [dataset, psycopg.sql.Identifier(table).as_string(conn), "label'); --", ["x'1", "é ü 🚀"]],
    )
    workload = conn.execute(
        "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.01]}', name => %s)", [dataset, "n'; DROP TABLE x; --"]
    ).fetchone()[0]  # type: ignore[index]
    conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])
    assert conn.execute(
        "SELECT w.name, d.label_column, d.feature_columns FROM workloads w JOIN datasets d ON d.name = w.dataset"
        " WHERE w.workload_id = %s",
        [workload],
    ).fetchone() == ("n'; DROP TABLE x; --", "label'); --", ["x'1", "é ü 🚀"])
    assert conn.execute("SELECT to_regclass('cerebro.configs') IS NOT NULL").fetchone() == (True,)

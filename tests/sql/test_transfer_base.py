"""A transfer config's base is pinned when the config is created, and stays in place while configs use it: a base
dropped (and perhaps imported anew under its name) is refused, never silently fine-tuned; hyperband and TPE run
transfer workloads to completion. A tiny base (``tests.conftest.tiny_base``) on 1,200 rows keeps them quick."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.conftest import launch, one, run_until_idle, tiny_base, unique

Session = psycopg.Connection[Any]

SPACE = {"trainable_from": "dense", "head_units": 8, "lr": 0.003}


def configs_of(conn: Session, workload: int) -> list[int]:
    return [r[0] for r in conn.execute("SELECT config_id FROM configs WHERE workload_id = %s ORDER BY 1", [workload])]


def imported(conn: Session, seed: int, name: str | None = None) -> tuple[str, str]:
    """(name, sha256) of tiny_base(seed), imported under ``name`` (a new one by default)."""
    name = name or unique("pinned_base")
    conn.execute("SELECT import_model(%s, %s)", [name, tiny_base(seed)])
    sha256: str = one(conn, "SELECT sha256 FROM imported_models WHERE name = %s", name)
    return name, sha256


def test_a_config_keeps_the_base_it_was_created_on(dsn: str, conn: Session, fashion_1seg: str) -> None:
    base, first = imported(conn, seed=1)
    workload = launch(conn, fashion_1seg, {**SPACE, "base": base}, epochs=2, seed=3, model="transfer")
    (config,) = configs_of(conn, workload)
    assert one(conn, "SELECT base_sha256 FROM configs WHERE config_id = %s", config) == first
    run_until_idle(dsn, max_units=1)  # epoch 1

    # in use: the drop is refused, names the workload and how to stop it, and drops nothing
    with pytest.raises(
        errors.ObjectInUse, match=rf"is the base of 1 pending or running configs \(your workloads {workload}\)"
    ) as refused:
        conn.execute("SELECT drop_imported_model(%s)", [base])
    assert f"UPDATE workloads SET status = 'stopped' WHERE workload_id IN ({workload})" in (
        refused.value.diag.message_hint or ""
    )
    assert one(conn, "SELECT count(*) FROM imported_models WHERE name = %s", base) == 1
    conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])
    conn.execute("SELECT drop_imported_model(%s)", [base])  # nothing active uses it now

    uses: list[tuple[str, list[Any]]] = [
        ("SELECT * FROM evaluate(%s, %s)", [config, fashion_1seg]),
        ("SELECT export_model(%s)", [config]),
        ("SELECT predict(%s, 'public.fashion_small', 'id', %s)", [config, unique("pinned_predictions")]),
    ]
    for reason in ("dropped", r"re-imported \(sha256 \w{12}\.\.\. now, " + first[:12]):
        for statement, arguments in uses:
            with pytest.raises(errors.ObjectNotInPrerequisiteState, match=f"base '{base}' was {reason}") as stale:
                conn.execute(statement, arguments)
            assert f"sha256 {first}" in (stale.value.diag.message_hint or "")
            assert f"clone_config({config})" in (stale.value.diag.message_hint or "")
        if reason == "dropped":
            _, second = imported(conn, seed=2, name=base)  # another model under the same name

    # resumed, its unit refuses the new base: the config fails, saying why
    conn.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [config])
    run_until_idle(dsn)
    status, error = one(conn, "SELECT status, error FROM configs WHERE config_id = %s", config)
    assert status == "failed" and f"base '{base}' was re-imported" in error
    assert one(conn, "SELECT epochs_done FROM configs WHERE config_id = %s", config) == 1

    # cloned onto the new base: its trained part goes on over the new base's frozen layers
    clone = one(conn, "SELECT clone_config(%s)", config)
    assert one(conn, "SELECT base_sha256 FROM configs WHERE config_id = %s", clone) == second
    run_until_idle(dsn)
    assert one(conn, "SELECT status, epochs_done FROM configs WHERE config_id = %s", clone) == ("completed", 2)
    loss, _ = one(conn, "SELECT loss, metric FROM evaluate(%s, %s)", clone, fashion_1seg)
    assert loss > 0
    conn.execute("SELECT drop_imported_model(%s)", [base])  # its configs are done


def test_users_cannot_pin_a_base_themselves(conn: Session, fashion_1seg: str) -> None:
    base, sha256 = imported(conn, seed=1)
    workload = launch(conn, fashion_1seg, {**SPACE, "base": base}, epochs=1, model="transfer")
    other = launch(conn, fashion_1seg, {"filters": 4, "dense_units": 16}, epochs=1)
    # the trigger writes the column whatever an INSERT gives (the system's own, which may; users are not granted it)
    conn.execute(
        "INSERT INTO configs (workload_id, params, base_sha256) VALUES (%s, %s, 'forged'), (%s, '{}', 'forged')",
        [workload, json.dumps({"base": base}), other],
    )
    pinned = conn.execute(
        "SELECT c.base_sha256 FROM configs c WHERE c.workload_id IN (%s, %s) ORDER BY c.workload_id, c.config_id",
        [workload, other],
    ).fetchall()
    assert pinned == [(sha256,), (sha256,), (None,), (None,)]
    conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id IN (%s, %s)", [workload, other])


@pytest.mark.parametrize(
    ("procedure", "space", "options"),
    [
        ("hyperband", {"layer": ["flatten", "dense"], "lr": [0.001, 0.01]}, {}),
        ("hyperopt", {"layer": ["flatten", "dense"], "lr": {"min": 1e-3, "max": 1e-2, "log": True}},
         {"num_configs": 4}),
    ],
    ids=["hyperband", "tpe"],
)  # fmt: skip
def test_procedures_run_a_transfer_workload_to_completion(
    dsn: str, conn: Session, fashion_1seg: str, procedure: str, space: dict[str, Any], options: dict[str, Any]
) -> None:
    base, sha256 = imported(conn, seed=1)
    workload = launch(
        conn,
        fashion_1seg,
        {**space, "base": base, "head_units": 8},
        epochs=3 if procedure == "hyperband" else 1,
        seed=4,
        model="transfer",
        procedure=procedure,
        **options,
    )
    run_until_idle(dsn)
    assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"
    rows = conn.execute(
        "SELECT status, params ->> 'layer', base_sha256 FROM configs WHERE workload_id = %s", [workload]
    ).fetchall()
    assert len(rows) == 4
    assert {layer for _, layer, _ in rows} <= {"flatten", "dense"} and {sha for _, _, sha in rows} == {sha256}
    statuses = sorted(status for status, _, _ in rows)
    if procedure == "hyperband":  # pruned at rung 1 (epoch 1) or trained to the end
        assert set(statuses) <= {"stopped", "completed"} and "completed" in statuses, statuses
    else:  # TPE suggested the configs beyond the one it starts with (one per segment)
        assert statuses == ["completed"] * 4
        suggested = one(
            conn,
            "SELECT count(*) FROM config_events e JOIN configs c USING (config_id)"
            " WHERE c.workload_id = %s AND e.kind = 'created' AND e.detail = 'suggested by hyperopt (TPE)'",
            workload,
        )
        assert suggested == 2

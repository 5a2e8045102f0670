"""A config that cannot train fails alone, with its reason in configs.error; the others go on."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg

from cerebro_db.scheduler import Scheduler
from tests.conftest import TINY_CNN, launch, run_until_idle, unique
from tests.plpy.test_custom import GOOD

Session = psycopg.Connection[Any]


def outcome(conn: Session, workload: int) -> list[tuple[str, str | None, int]]:
    """Per config, in creation order: status, error, epochs with metrics."""
    rows = conn.execute(
        "SELECT c.status, c.error, (SELECT count(*) FROM epoch_metrics m WHERE m.config_id = c.config_id)"
        " FROM configs c WHERE c.workload_id = %s ORDER BY c.config_id",
        [workload],
    ).fetchall()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def test_a_diverging_config_fails_and_the_others_complete(dsn: str, conn: Session) -> None:
    # Raw features around 1e12: Adam's bounded steps cope, SGD with lr 10 overflows to NaN
    # (whatever the seed: checked over 8 seeds).
    conn.execute(
        "CREATE TABLE unscaled AS SELECT g % 3 AS y, g * 5e9 AS a, (g % 7) * 1e11 AS b FROM generate_series(1, 200) g"
    )
    conn.execute("SELECT * FROM prepare_dataset('unscaled', 'unscaled', 'y', \"normalize\" => 'none')")
    workload = conn.execute(
        "SELECT run_model_selection('unscaled', 'mlp', %s, max_epochs => 2, seed => 1)",
        [json.dumps({"optimizer": "adam", "lr": 0.001, "hidden_units": 16})],
    ).fetchone()[0]  # type: ignore[index]
    conn.execute('SELECT add_config(%s, \'{"optimizer": "sgd", "lr": 10, "hidden_units": 16}\')', [workload])
    run_until_idle(dsn)
    adam, sgd = outcome(conn, workload)
    assert adam == ("completed", None, 2)
    assert sgd[0] == "failed" and "training diverged" in (sgd[1] or "")
    assert conn.execute("SELECT status FROM workloads WHERE workload_id = %s", [workload]).fetchone() == ("completed",)


#: Builds fine at registration (no "explode" in the sample params), fails in a unit when asked to.
EXPLODING = GOOD.replace(
    "def create_model(params):\n",
    "def create_model(params):\n    if params.get('explode'):\n        raise RuntimeError('asked to explode')\n",
)


def test_an_exception_in_a_custom_model_fails_only_its_config(dsn: str, conn: Session, blobs_2seg: str) -> None:
    name = unique("exploding")
    conn.execute("SELECT register_model(%s, %s)", [name, EXPLODING])
    workload = conn.execute(
        "SELECT run_model_selection(%s, %s, %s, max_epochs => 1)",
        [blobs_2seg, name, json.dumps({"explode": [0, 1]})],
    ).fetchone()[0]  # type: ignore[index]
    run_until_idle(dsn)
    calm, exploded = outcome(conn, workload)
    assert calm == ("completed", None, 1)
    assert exploded[0] == "failed" and "asked to explode" in (exploded[1] or ""), exploded


def test_a_stuck_unit_is_cancelled_at_the_unit_timeout_and_the_config_can_be_retried(
    dsn: str, conn: Session, fashion_1seg: str
) -> None:
    """Independent of the machine's speed: no unit runs under the timeout but the one that is stuck
    for certain (it waits for a row lock this test holds until the run is over)."""
    workload = launch(conn, fashion_1seg, {"lr": [0.003], **TINY_CNN}, epochs=2)
    stuck = conn.execute("SELECT config_id FROM configs WHERE workload_id = %s", [workload]).fetchone()[0]  # type: ignore[index]
    blocked = threading.Event()
    with psycopg.connect(dsn) as blocker:

        def block_after_first_unit(unit: dict[str, Any]) -> None:
            """After the config's first unit (no time limit: it may import TensorFlow for as long as it
            takes), hold the state row its next hop must write, then set the limit. On one segment,
            that next hop can only be claimed by this callback's segment thread, once it returns."""
            if unit["config_id"] == stuck and not blocked.is_set():
                blocked.set()
                blocker.execute("SELECT 1 FROM model_states WHERE config_id = %s FOR UPDATE", [stuck])
                conn.execute("UPDATE workloads SET unit_timeout = '1 s' WHERE workload_id = %s", [workload])

        Scheduler(dsn, on_unit=block_after_first_unit, idle_wait=0.2).run(until_idle=True)
        blocker.rollback()

    status, error = conn.execute("SELECT status, error FROM configs WHERE config_id = %s", [stuck]).fetchone()  # type: ignore[misc]
    assert status == "failed"
    assert "unit of epoch 2 on segment 0 ran longer than unit_timeout (00:00:01) and was cancelled" in error
    assert conn.execute(
        "SELECT kind FROM config_events WHERE config_id = %s ORDER BY event_id DESC LIMIT 1", [stuck]
    ).fetchone() == ("failed",)
    assert conn.execute("SELECT status FROM workloads WHERE workload_id = %s", [workload]).fetchone() == ("completed",)

    # The user sets the default bound again (NULL) and retries: the config goes on from its last committed hop.
    conn.execute("UPDATE workloads SET unit_timeout = NULL WHERE workload_id = %s", [workload])
    conn.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [stuck])
    run_until_idle(dsn)
    assert conn.execute("SELECT status, epochs_done, error FROM configs WHERE config_id = %s", [stuck]).fetchone() == (
        "completed",
        2,
        None,
    )

"""register_model: a custom script is checked at registration, refused with its error, and trains like the roster."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import run_until_idle, unique
from tests.plpy.test_custom import BROKEN, GOOD

Session = psycopg.Connection[Any]


def test_registered_script_trains_like_a_roster_model(conn: Session, dsn: str, blobs_2seg: str) -> None:
    name = unique("dense")
    conn.execute("SELECT register_model(%s, %s)", [name, GOOD])
    row = conn.execute(
        "SELECT entry_point, length(source_sha256), owner = current_user FROM registered_models WHERE name = %s", [name]
    ).fetchone()
    assert row == ("create_model", 64, True)
    space = {"lr": [0.01, 0.05], "units": [4]}
    workload = conn.execute(
        "SELECT run_model_selection(%s, %s, %s, max_epochs => 2, seed => 1)", [blobs_2seg, name, json.dumps(space)]
    ).fetchone()
    assert workload is not None
    params = [r[0] for r in conn.execute("SELECT params FROM configs WHERE workload_id = %s", [workload[0]])]
    assert sorted(p["lr"] for p in params) == [0.01, 0.05] and all(p["units"] == 4 for p in params)
    run_until_idle(dsn)
    rows = conn.execute(
        "SELECT c.status, count(m.*), max(m.val_metric) FROM configs c LEFT JOIN epoch_metrics m USING (config_id)"
        " WHERE c.workload_id = %s GROUP BY c.config_id ORDER BY c.config_id",
        [workload[0]],
    ).fetchall()
    assert [(status, epochs) for status, epochs, _ in rows] == [("completed", 2), ("completed", 2)]
    assert max(best for *_, best in rows) > 0.5  # blobs are separable: the script really learns
    # Its winners are used like the roster's: the exported file loads in plain Keras.
    import keras

    config = conn.execute("SELECT min(config_id) FROM configs WHERE workload_id = %s", [workload[0]]).fetchone()
    assert config is not None
    exported = conn.execute("SELECT export_model(%s)", [config[0]]).fetchone()
    assert exported is not None
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.keras"
        path.write_bytes(exported[0])
        assert keras.saving.load_model(path).output_shape == (None, 3)
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload[0]])


@pytest.mark.parametrize(("source", "error"), BROKEN, ids=[e for _, e in BROKEN])
def test_broken_scripts_are_refused_with_their_error(conn: Session, source: str, error: str) -> None:
    name = unique("broken")
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT register_model(%s, %s)", [name, source])
    assert raised.value.sqlstate == "22023"
    assert error in (raised.value.diag.message_primary or ""), raised.value.diag.message_primary
    assert "create_model(params) must return" in (raised.value.diag.message_hint or "")
    assert conn.execute("SELECT count(*) FROM registered_models WHERE name = %s", [name]).fetchone() == (0,)


def test_names_are_unique_and_not_the_rosters(conn: Session) -> None:
    name = unique("twice")
    conn.execute("SELECT register_model(%s, %s)", [name, GOOD])
    with pytest.raises(psycopg.errors.DuplicateObject, match="already registered"):
        conn.execute("SELECT register_model(%s, %s)", [name, GOOD])
    with pytest.raises(psycopg.Error, match="'mlp' is a roster model"):
        conn.execute("SELECT register_model('mlp', %s)", [GOOD])
    with pytest.raises(psycopg.Error, match="has no function 'build'"):
        conn.execute("SELECT register_model(%s, %s, entry_point => 'build')", [unique("other"), GOOD])

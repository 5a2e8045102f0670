"""import_model: a pretrained .keras archive is checked in Keras' safe mode, stored with its layers, owned and
private to its owner; the refusals store nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cerebro_db import cli, install
from cerebro_db.cluster import ClusterConfig
from tests.conftest import add_tenant, one, run_until_idle, unique
from tests.plpy.test_imported import TINY_LAYERS, keras_bytes, lambda_model, tiny_model, unfixed_model

Session = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def tiny() -> bytes:
    return keras_bytes(tiny_model())


@pytest.fixture(scope="module")
def ann(cluster: ClusterConfig, dsn: str) -> str:
    return add_tenant(cluster, dsn, "import_ann")


@pytest.fixture(scope="module")
def ben(cluster: ClusterConfig, dsn: str) -> str:
    return add_tenant(cluster, dsn, "import_ben")


@pytest.fixture
def as_ann(ann: str) -> Iterator[Session]:
    with psycopg.connect(ann, autocommit=True) as session:
        yield session


def import_model(session: Session, name: str, data: bytes, description: str | None = None) -> None:
    session.execute("SELECT import_model(%s, %b, %s)", [name, data, description])


def stored(conn: Session) -> int:
    """Imported models of everyone (the schema owner sees past row-level security)."""
    count: int = one(conn, "SELECT count(*) FROM imported_models")
    return count


def test_a_model_is_imported_with_its_layers_and_sizes(as_ann: Session, conn: Session, tiny: bytes) -> None:
    name = unique("tiny")
    import_model(as_ann, name, tiny, "a tiny cnn")
    layers = as_ann.execute("SELECT * FROM model_layers(%s)", [name]).fetchall()
    assert layers == [(i, *layer) for i, layer in enumerate(TINY_LAYERS)]
    assert [c.name for c in as_ann.execute("SELECT * FROM model_layers(%s)", [name]).description or []] == [
        "index",
        "name",
        "class",
        "output_shape",
        "params",
        "trainable",
    ]
    catalog = as_ann.execute(
        "SELECT owner = current_user, description, input_shape, output_shape, layers, params, size_bytes, sha256"
        " FROM imported_model_catalog WHERE name = %s",
        [name],
    ).fetchone()
    assert catalog == (True, "a tiny cnn", [4, 4, 1], [3], 3, 47, len(tiny), hashlib.sha256(tiny).hexdigest())
    assert one(as_ann, "SELECT keras_file FROM imported_models WHERE name = %s", name) == tiny
    as_ann.execute("SELECT drop_imported_model(%s)", [name])
    assert one(conn, "SELECT count(*) FROM imported_models WHERE name = %s", name) == 0


def taken(session: Session) -> str:
    """A name imported already (by this session's user)."""
    name = unique("taken")
    import_model(session, name, keras_bytes(tiny_model()))
    return name


#: What is imported -> the refusal's message, SQLSTATE and a word of its hint.
REFUSALS: list[tuple[str, Callable[[Session], tuple[str, bytes]], str, str, str]] = [
    ("not_keras", lambda _: (unique("h5"), b"\x89HDF\r\n\x1a\n not a zip"), "not a Keras archive", "22P03", ".keras"),
    ("lambda", lambda _: (unique("lam"), keras_bytes(lambda_model())), "safe mode.*Lambda", "0A000", "Lambda"),
    ("unfixed", lambda _: (unique("seq"), keras_bytes(unfixed_model())), r"\(None, None, 3\) is not fixed", "22023",
     "keras.Input"),
    ("empty", lambda _: (unique("empty"), b""), "is empty", "22023", "model.save"),
    ("duplicate", lambda s: (taken(s), keras_bytes(tiny_model())), "exists already", "42710", "another name"),
]  # fmt: skip


@pytest.mark.parametrize(("made", "error", "sqlstate", "hint"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_say_why_and_store_nothing(
    as_ann: Session,
    conn: Session,
    made: Callable[[Session], tuple[str, bytes]],
    error: str,
    sqlstate: str,
    hint: str,
) -> None:
    name, data = made(as_ann)
    before = stored(conn)
    with pytest.raises(psycopg.Error, match=error) as refused:
        import_model(as_ann, name, data)
    assert refused.value.sqlstate == sqlstate
    assert hint in (refused.value.diag.message_hint or "")
    assert stored(conn) == before


def test_another_user_can_neither_see_nor_drop_it_an_admin_can(
    as_ann: Session, ben: str, cluster: ClusterConfig, dsn: str, conn: Session, tiny: bytes
) -> None:
    name = unique("anns")
    import_model(as_ann, name, tiny)
    with psycopg.connect(ben, autocommit=True) as as_ben:
        assert one(as_ben, "SELECT count(*) FROM imported_models") == 0
        assert one(as_ben, "SELECT count(*) FROM imported_model_catalog") == 0
        for attack in ("SELECT * FROM model_layers(%s)", "SELECT drop_imported_model(%s)"):
            with pytest.raises(psycopg.errors.UndefinedObject, match="unknown imported model"):
                as_ben.execute(attack, [name])
        assert as_ben.execute("DELETE FROM imported_models WHERE name = %s", [name]).rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # no row but through import_model's check
            as_ben.execute(
                "INSERT INTO imported_models (name, keras_file, size_bytes, sha256, input_shape, output_shape, params,"
                " layers) VALUES (%s, %b, %s, '', '{4,4,1}', '{3}', 0, '[]')",
                [unique("forged"), tiny, len(tiny)],
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # nor runs the check alone
            as_ben.execute("SELECT _describe_imported_model(%b)", [tiny])
        with pytest.raises(psycopg.errors.DuplicateObject):  # the name is taken: that much is told
            import_model(as_ben, name, tiny)
    assert one(as_ann, "SELECT count(*) FROM model_layers(%s)", name) == 3  # ann's model is untouched
    admin = unique("import_admin")
    admin_dsn = dataclasses.replace(cluster, user=admin, password=install.add_user(dsn, admin, admin=True)).dsn()
    with psycopg.connect(admin_dsn, autocommit=True) as as_admin:
        owner = one(as_admin, "SELECT owner FROM imported_model_catalog WHERE name = %s", name)
        assert owner == one(as_ann, "SELECT current_user")
        assert one(as_admin, "SELECT count(*) FROM model_layers(%s)", name) == 3
        as_admin.execute("SELECT drop_imported_model(%s)", [name])
    assert one(conn, "SELECT count(*) FROM imported_models WHERE name = %s", name) == 0


def test_a_config_trained_and_exported_by_cerebro_db_imports_back(
    conn: Session,
    dsn: str,
    blobs_2seg: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real path: cerebro-db export of a trained roster config, then cerebro-db import-model of the file."""
    workload = one(
        conn,
        "SELECT run_model_selection(%s, 'mlp', %s, max_epochs => 1, seed => 3)",
        blobs_2seg,
        json.dumps({"lr": [0.01], "hidden_units": [8]}),
    )
    run_until_idle(dsn)
    config = one(conn, "SELECT config_id FROM configs WHERE workload_id = %s AND status = 'completed'", workload)
    monkeypatch.setenv("CEREBRO_DSN", dsn)
    exported, name = tmp_path / "mlp.keras", unique("mlp_blobs")
    cli.main(["export", str(config), "-o", str(exported)])
    capsys.readouterr()
    cli.main(["import-model", name, str(exported), "--description", "mlp on blobs"])
    printed = capsys.readouterr().out
    layers = conn.execute("SELECT name, class, output_shape FROM model_layers(%s)", [name]).fetchall()
    # The exported file nests the trained mlp after the normalization: its layers are listed too, by path.
    assert layers[0][1] == "Normalization" and layers[-1][1:] == ("Dense", "(None, 3)") and "/" in layers[-1][0]
    assert f"imported model {name!r}" in printed
    for layer_name, layer_class, shape in layers:
        assert any(layer_name in line and layer_class in line and shape in line for line in printed.splitlines())
    assert one(conn, "SELECT input_shape, description FROM imported_model_catalog WHERE name = %s", name) == (
        [6],
        "mlp on blobs",
    )
    assert one(conn, "SELECT keras_file FROM imported_models WHERE name = %s", name) == exported.read_bytes()
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_the_cli_refuses_an_oversized_file_before_sending_it_and_passes_on_refusals(
    ann: str, conn: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEREBRO_DSN", ann)
    huge = tmp_path / "huge.keras"
    with huge.open("wb") as sparse:  # no disk nor memory: a hole
        sparse.truncate(512 * 2**20 + 1)
    before = stored(conn)
    with pytest.raises(SystemExit, match="536,870,913 bytes, over the import limit of 536,870,912"):
        cli.main(["import-model", unique("huge"), str(huge)])
    not_keras = tmp_path / "model.h5"
    not_keras.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(SystemExit, match=r"not a Keras archive.*\(hint: .*\.keras"):
        cli.main(["import-model", unique("h5"), str(not_keras)])
    with pytest.raises(SystemExit, match="No such file"):
        cli.main(["import-model", unique("gone"), str(tmp_path / "gone.keras")])
    assert stored(conn) == before


def test_adduser_refuses_a_name_whose_imported_models_remain(dsn: str, cluster: ClusterConfig, tiny: bytes) -> None:
    name = unique("import_reborn")
    login = dataclasses.replace(cluster, user=name, password=install.add_user(dsn, name)).dsn()
    with psycopg.connect(login, autocommit=True) as session:
        import_model(session, unique("left_behind"), tiny)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {0}; DROP ROLE {0}").format(sql.Identifier(name)))  # adduser made both
        with pytest.raises(ValueError, match=f"1 imported_models still belong to '{name}'"):
            install.add_user(dsn, name)
        admin.execute("DELETE FROM imported_models WHERE owner = %s", [name])
    install.add_user(dsn, name)  # a new role of that name, inheriting nothing

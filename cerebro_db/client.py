"""The client API: every read and every action the CLI and the dashboard offer, on an SQLAlchemy connection
(:func:`cerebro_db.connection.make_engine`).

The CLI and the pages in ``ui/`` stay thin and call only this module for the database. Actions go through the
SQL API (``run_model_selection``, ``prepare_dataset``, ``add_config``, ``clone_config``) or through plain,
guarded UPDATEs of ``configs`` / ``workloads`` as users would type them; the database's own triggers and
validation decide. A status change names the status the page showed, so a stale page never overwrites a newer
status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, text, update
from sqlalchemy.exc import DBAPIError

from cerebro_db.models import Config, Workload

Row = dict[str, Any]


class ActionError(Exception):
    """An action the database refused, or that a newer change overtook; the message is for users."""


def database_message(error: DBAPIError) -> str:
    """The server's message and hint, without the driver's traceback-style decoration."""
    diag = getattr(error.orig, "diag", None)
    message = getattr(diag, "message_primary", None) or str(error.orig).splitlines()[0]
    hint = getattr(diag, "message_hint", None)
    return f"{message} (hint: {hint})" if hint else message


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One short transaction; a database error becomes an :class:`ActionError` with its message and hint."""
    try:
        with engine.begin() as conn:
            yield conn
    except DBAPIError as error:
        raise ActionError(database_message(error)) from error


def _rows(conn: Connection, query: str, **params: Any) -> list[Row]:
    return [dict(row) for row in conn.execute(text(query), params).mappings()]


# ---------------------------------------------------------------- reads


def workloads(conn: Connection, workload_id: int | None = None) -> list[Row]:
    """Workloads (all, or one) newest first, with progress: epochs done / planned (stopped configs count as done)."""
    return _rows(
        conn,
        "SELECT p.workload_id, p.name, w.description, p.owner, w.dataset, p.model, p.procedure, p.status,"
        " w.max_epochs, w.parent_workload_id, w.search_space, w.created_at, p.configs, p.configs_active,"
        " p.configs_completed, p.configs_stopped, p.configs_failed, p.epochs_done,"
        " p.epochs_done + p.epochs_left AS epochs_planned, p.best_val_metric, p.eta"
        " FROM workload_progress p JOIN workloads w USING (workload_id)"
        " WHERE CAST(:workload AS int) IS NULL OR p.workload_id = :workload ORDER BY p.workload_id DESC",
        workload=workload_id,
    )


def workload(conn: Connection, workload_id: int) -> Row | None:
    found = workloads(conn, workload_id)
    return found[0] if found else None


def configs(conn: Connection, workload_id: int) -> list[Row]:
    """The workload's configs in leaderboard order, with lineage and errors; ``searched_params`` are the
    params of the search space's keys."""
    return _rows(
        conn,
        "SELECT l.config_id, l.rank, l.params, l.status, l.epochs_done, l.max_epochs, l.best_val_metric,"
        " l.best_val_loss, l.best_epoch, c.cloned_from, c.created_by, c.error,"
        " searched_params(l.params, w.search_space) AS searched_params"
        " FROM leaderboard l JOIN configs c USING (config_id) JOIN workloads w ON w.workload_id = l.workload_id"
        " WHERE l.workload_id = :workload ORDER BY l.rank, l.config_id",
        workload=workload_id,
    )


def config_events(conn: Connection, config_id: int) -> list[Row]:
    """The config's history (config_events) in order: ``at``, ``kind`` (``created``, a status, ``pruned``,
    ``max_epochs`` or ``accepted``), ``epochs_done``, ``actor`` (``cerebro``: the system), ``detail`` (the reason,
    or NULL) and, for an accepted suggestion, its ``suggestion_id``, ``suggestion_kind``, ``suggestion_reason`` and
    ``suggestion_sql``."""
    return _rows(
        conn,
        "SELECT e.at, e.kind, e.epochs_done, e.actor, e.detail, e.suggestion_id, s.kind AS suggestion_kind,"
        " s.reason AS suggestion_reason, s.sql AS suggestion_sql FROM config_events e"
        " LEFT JOIN suggestion_log s ON s.suggestion_id = e.suggestion_id"
        " WHERE e.config_id = :config ORDER BY e.event_id",
        config=config_id,
    )


def workload_finished(conn: Connection, workload_id: int) -> bool:
    """Whether waiting for the workload is over (the SQL workload_finished: it is no longer running, or there is
    no such workload of the user's)."""
    return bool(conn.execute(text("SELECT cerebro.workload_finished(:w)"), {"w": workload_id}).scalar_one())


def units(conn: Connection, workload_id: int, after_unit: int = 0) -> list[Row]:
    """The workload's committed hops after unit ``after_unit``, in order; ``val_metric`` on the hop that ended an
    epoch (it validated)."""
    return _rows(
        conn,
        "SELECT u.unit_id, u.config_id, u.epoch, c.max_epochs, u.segment, u.rows, u.train_s, u.train_loss,"
        " u.train_metric, m.val_metric"
        " FROM units u JOIN configs c USING (config_id)"
        " LEFT JOIN epoch_metrics m"
        "   ON m.config_id = u.config_id AND m.epoch = u.epoch AND u.validation_s IS NOT NULL"
        " WHERE c.workload_id = :workload AND u.unit_id > :after ORDER BY u.unit_id",
        workload=workload_id,
        after=after_unit,
    )


def learning_curves(conn: Connection, workload_id: int) -> list[Row]:
    """One row per finished epoch of each of the workload's configs."""
    return _rows(
        conn,
        "SELECT m.config_id, m.epoch, m.train_loss, m.train_metric, m.val_loss, m.val_metric, m.seconds,"
        " m.finished_at FROM epoch_metrics m JOIN configs c USING (config_id)"
        " WHERE c.workload_id = :workload ORDER BY m.config_id, m.epoch",
        workload=workload_id,
    )


# ---- curves and leaderboard


def curves_with_ancestors(conn: Connection, config_ids: Sequence[int]) -> list[Row]:
    """The learning curve of each config in ``config_ids``, continued back through its ancestors (``cloned_from``,
    recursively): one row per point, like :func:`learning_curves`, where ``config_id`` is the config whose line it
    is, ``from_config`` the config that trained that epoch and ``inherited`` whether it is an ancestor's point.

    A clone keeps counting its source's epochs, so it inherits the source's epochs up to the clone point; a warm
    start (a config of a drill-down workload, started from its parent workload's weights) counts from 1, so the
    epochs its source had finished when it was created are shifted to end at epoch 0. ``epoch`` is on the line's
    own count; ``workload_id`` and ``searched_params`` are the line's config's.
    """
    return _rows(
        conn,
        "WITH RECURSIVE chain AS ("
        "   SELECT c.config_id AS line, c.config_id AS source, NULL::int AS upto, 0 AS shift, 0 AS depth"
        "   FROM configs c WHERE c.config_id = ANY(CAST(:configs AS int[]))"
        "   UNION ALL"
        "   SELECT chain.line, p.config_id, link.point, chain.shift + link.shift, chain.depth + 1"
        "   FROM chain JOIN configs c ON c.config_id = chain.source JOIN configs p ON p.config_id = c.cloned_from"
        # a clone starts at its source's epochs_done (its first own epoch follows it); a warm start at the
        # epochs its source had finished when it was created
        "   CROSS JOIN LATERAL (SELECT CASE WHEN p.workload_id = c.workload_id"
        "       THEN coalesce((SELECT min(m.epoch) - 1 FROM epoch_metrics m WHERE m.config_id = c.config_id),"
        "                     c.epochs_done)"
        "       ELSE (SELECT coalesce(max(m.epoch), 0) FROM epoch_metrics m"
        "             WHERE m.config_id = p.config_id AND m.finished_at <= c.created_at) END AS point) clone_point"
        "   CROSS JOIN LATERAL (SELECT clone_point.point,"
        "       CASE WHEN p.workload_id = c.workload_id THEN 0 ELSE clone_point.point END AS shift) link"
        "   WHERE chain.depth < 1000"  # lineage is acyclic (a source is older); a bound all the same
        ")"
        " SELECT chain.line AS config_id, m.config_id AS from_config, m.epoch - chain.shift AS epoch,"
        " chain.depth > 0 AS inherited, m.train_loss, m.train_metric, m.val_loss, m.val_metric, m.seconds,"
        " m.finished_at, c.workload_id, searched_params(c.params, w.search_space) AS searched_params"
        " FROM chain JOIN epoch_metrics m ON m.config_id = chain.source AND m.epoch <= coalesce(chain.upto, m.epoch)"
        " JOIN configs c ON c.config_id = chain.line JOIN workloads w ON w.workload_id = c.workload_id"
        " ORDER BY chain.line, 3",
        configs=list(config_ids),
    )


def dataset_configs(conn: Connection, workload_id: int) -> list[Row]:
    """The configs of every workload on this workload's dataset, as :func:`configs` has them plus ``workload_id``
    and ``workload_name``; ``rank`` is across all of them (by best val metric)."""
    return _rows(
        conn,
        "SELECT l.workload_id, w.name AS workload_name,"
        " rank() OVER (ORDER BY l.best_val_metric DESC NULLS LAST) AS rank, l.config_id, l.params, l.status,"
        " l.epochs_done, l.max_epochs, l.best_val_metric, l.best_val_loss, l.best_epoch, c.cloned_from,"
        " c.created_by, c.error, searched_params(c.params, w.search_space) AS searched_params"
        " FROM leaderboard l JOIN configs c USING (config_id) JOIN workloads w ON w.workload_id = l.workload_id"
        " WHERE w.dataset = (SELECT dataset FROM workloads WHERE workload_id = :workload)"
        " ORDER BY rank, l.config_id",
        workload=workload_id,
    )


def segments(conn: Connection) -> list[Row]:
    """The registered segments and where each is (``local``, or its server's URL); the operator's read
    (users may not read ``segments.dsn``)."""
    return _rows(conn, "SELECT segment, coalesce(dsn, 'local') AS location FROM segments ORDER BY 1")


def segment_activity(conn: Connection) -> list[Row]:
    return _rows(
        conn,
        "SELECT segment, workload_id, config_id, epoch, extract(epoch FROM running_for)::float8 AS running_s"
        " FROM segment_activity ORDER BY segment",
    )


def scheduler_alive(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT cerebro.scheduler_alive()")).scalar_one())


def lineage(conn: Connection, workload_id: int) -> Row:
    """The parent workload, the drill-downs started from this one, and the configs that are clones or warm starts."""
    parent = conn.execute(
        select(Workload.parent_workload_id).where(Workload.workload_id == workload_id)
    ).scalar_one_or_none()
    children = _rows(
        conn,
        "SELECT workload_id, name, status FROM workloads WHERE parent_workload_id = :workload ORDER BY 1",
        workload=workload_id,
    )
    derived = _rows(
        conn,
        "SELECT config_id, origin, cloned_from, cloned_from_workload FROM workload_lineage"
        " WHERE workload_id = :workload AND origin <> 'new' ORDER BY config_id",
        workload=workload_id,
    )
    return {"parent": parent, "children": children, "derived": derived}


# ---- config page


def all_configs(conn: Connection) -> list[Row]:
    """Every config the user may see, newest first, with its workload's name (the config page's picker)."""
    return _rows(
        conn,
        "SELECT c.config_id, c.workload_id, w.name AS workload_name, c.status"
        " FROM configs c JOIN workloads w USING (workload_id) ORDER BY c.config_id DESC",
    )


def config(conn: Connection, config_id: int) -> Row | None:
    """One config with its workload, its rank and best epoch there, and ``state_bytes``: the size of its latest
    committed state (NULL before its first unit); None if there is no such config of the user's."""
    found = _rows(
        conn,
        "SELECT c.config_id, c.workload_id, w.name AS workload_name, l.rank, c.params, c.status, c.epochs_done,"
        " c.max_epochs, l.best_val_metric, l.best_val_loss, l.best_epoch, c.cloned_from, c.created_by,"
        " c.created_at, c.error, cerebro.config_state_bytes(c.config_id) AS state_bytes"
        " FROM configs c JOIN workloads w USING (workload_id) JOIN leaderboard l USING (config_id)"
        # the leaderboard ranks within a workload: filtering on its partition computes only this workload's
        " WHERE c.config_id = :config AND l.workload_id = (SELECT workload_id FROM configs WHERE config_id = :config)",
        config=config_id,
    )
    return found[0] if found else None


def config_lineage(conn: Connection, config_id: int) -> list[Row]:
    """The config's relatives, by ``relation``: its ``parent`` (``origin`` says whether it was cloned within the
    workload or warm-started from another), and the configs made from it (``clone`` or ``warm start``)."""
    return _rows(
        conn,
        "SELECT CASE WHEN l.config_id = :config THEN 'parent' ELSE l.origin END AS relation, l.origin,"
        " r.config_id, r.workload_id, w.name AS workload_name, r.status"
        " FROM workload_lineage l"
        " JOIN configs r ON r.config_id = CASE WHEN l.config_id = :config THEN l.cloned_from ELSE l.config_id END"
        " JOIN workloads w ON w.workload_id = r.workload_id"
        " WHERE l.config_id = :config OR l.cloned_from = :config ORDER BY r.config_id",
        config=config_id,
    )


def config_units(conn: Connection, config_id: int) -> list[Row]:
    """The config's committed units in order, with the seconds of each phase (``validation_s``: NULL unless the
    unit ended an epoch)."""
    return _rows(
        conn,
        "SELECT unit_id, epoch, segment, rows, data_load_s, state_load_s, train_s, state_save_s, validation_s,"
        " train_loss, train_metric, started_at, finished_at, backend_pid"
        " FROM units WHERE config_id = :config ORDER BY unit_id",
        config=config_id,
    )


def datasets(conn: Connection) -> list[Row]:
    """Prepared datasets with their shards: rows and stored bytes per shard (``segment``: with replication 1 a
    shard's segment; else segment s holds shard s % (num_segments // replication)) and split."""
    found = _rows(
        conn,
        "SELECT dataset_id, name, owner, source_table, label_column, feature_shape, num_classes, num_segments,"
        " replication, train_rows, validation_rows, validation_fraction, created_at FROM datasets ORDER BY name",
    )
    shards = _rows(
        conn,
        "SELECT dataset_id, segment, split, count(*) AS buffers, sum(rows) AS rows,"
        " sum(octet_length(x) + octet_length(y)) AS bytes"
        " FROM dataset_buffers GROUP BY dataset_id, segment, split ORDER BY dataset_id, segment, split",
    )
    for row in found:
        row["shards"] = [shard for shard in shards if shard["dataset_id"] == row["dataset_id"]]
    return found


def roster(conn: Connection) -> list[Row]:
    """The ``roster`` view: one row per model and hyper-parameter, its default decoded from JSON."""
    rows = _rows(conn, "SELECT * FROM roster")
    for row in rows:
        row["default_value"] = json.loads(row["default_value"])
    return rows


def registered_models(conn: Connection) -> list[Row]:
    """Custom model scripts (``register_model``): name, entry point, source, who registered them, when."""
    return _rows(conn, "SELECT name, entry_point, source, owner, created_at FROM registered_models ORDER BY name")


def may_register_models(conn: Connection) -> bool:
    """Whether the connected role may register scripts (cerebro_admin, or the cluster's owner)."""
    return bool(
        conn.execute(
            text("SELECT has_function_privilege('cerebro.register_model(text, text, text)', 'EXECUTE')")
        ).scalar_one()
    )


def register_model(conn: Connection, name: str, source: str, entry_point: str) -> str:
    """``register_model``: the script is checked (it must build a compiled model) before it is stored."""
    conn.execute(
        text("SELECT cerebro.register_model(:name, :source, :entry_point)"),
        {"name": name, "source": source, "entry_point": entry_point},
    )
    return f"model {name!r} registered: launch it like a roster model"


def source_tables(conn: Connection) -> dict[str, list[str]]:
    """User tables a dataset can be prepared from (outside the cerebro schema) -> their columns.

    A table outside the role's own schema is named ``schema.table``: the search path has only that one.
    """
    own_schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    tables: dict[str, list[str]] = {}
    for row in _rows(
        conn,
        "SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE t.table_type = 'BASE TABLE'"
        "   AND c.table_schema NOT IN ('cerebro', 'pg_catalog', 'information_schema')"
        " ORDER BY c.table_schema, c.table_name, c.ordinal_position",
    ):
        schema = row["table_schema"]
        name = row["table_name"] if schema == own_schema else f"{schema}.{row['table_name']}"
        tables.setdefault(name, []).append(row["column_name"])
    return tables


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class LaunchRequest:
    """``run_model_selection``'s arguments, by their names (``dataset`` is a name, ``parent_workload`` a
    workload's id), and the workload's description."""

    dataset: str
    model: str
    search_space: dict[str, Any]
    procedure: str = "grid"
    max_epochs: int = 10
    num_configs: int | None = None
    name: str | None = None
    description: str | None = None
    parent_workload: int | None = None
    warm_start: bool = False
    seed: int | None = None  # None: a random one


def launch(conn: Connection, request: LaunchRequest) -> int:
    """``run_model_selection``; returns the new workload's id."""
    workload_id: int = conn.execute(
        text(
            "SELECT cerebro.run_model_selection(:dataset, :model, CAST(:space AS jsonb), procedure => :procedure,"
            " max_epochs => :max_epochs, num_configs => :num_configs, name => :name,"
            " parent_workload => :parent, warm_start => :warm_start, seed => :seed)"
        ),
        {
            "dataset": request.dataset,
            "model": request.model,
            "space": json.dumps(request.search_space),
            "procedure": request.procedure,
            "max_epochs": request.max_epochs,
            "num_configs": request.num_configs,
            "name": request.name or None,
            "parent": request.parent_workload,
            "warm_start": request.warm_start,
            "seed": request.seed,
        },
    ).scalar_one()
    if request.description:
        conn.execute(
            update(Workload).where(Workload.workload_id == workload_id).values(description=request.description)
        )
    return workload_id


def prepare_dataset(
    conn: Connection,
    name: str,
    source_table: str,
    label_column: str,
    *,
    feature_columns: Sequence[str] | None = None,
    feature_shape: Sequence[int] | None = None,
    validation_fraction: float = 0.1,
) -> list[Row]:
    """``prepare_dataset``; returns its per-segment summary."""
    return _rows(
        conn,
        "SELECT * FROM cerebro.prepare_dataset(:name, :table, :label, feature_columns => :features,"
        " validation_fraction => :fraction, feature_shape => :shape)",
        name=name,
        table=source_table,
        label=label_column,
        features=list(feature_columns) if feature_columns else None,
        fraction=validation_fraction,
        shape=list(feature_shape) if feature_shape else None,
    )


def _current_status(conn: Connection, config_id: int) -> str:
    status = conn.execute(select(Config.status).where(Config.config_id == config_id)).scalar_one_or_none()
    if status is None:
        raise ActionError(f"config {config_id} no longer exists")
    return status


def set_config_status(conn: Connection, config_id: int, status: str, seen: str) -> str:
    """Stop (``stopped``) or resume (``running``) a config the page showed as ``seen``; returns what happened."""
    changed = conn.execute(
        update(Config).where(Config.config_id == config_id, Config.status == seen).values(status=status)
    ).rowcount
    if changed:
        return f"config {config_id}: {'stopped' if status == 'stopped' else 'resumed'}"
    now = _current_status(conn, config_id)
    if now == status:  # a double click, or someone else did the same
        return f"config {config_id} is already {now}"
    raise ActionError(f"config {config_id} changed meanwhile (now {now}); nothing done")


def set_max_epochs(conn: Connection, config_id: int, max_epochs: int, seen_status: str, seen_max: int) -> str:
    """Raise (or lower) a config's epoch budget; a completed config with epochs left continues."""
    changed = conn.execute(
        update(Config)
        .where(Config.config_id == config_id, Config.status == seen_status, Config.max_epochs == seen_max)
        .values(max_epochs=max_epochs, status="running" if seen_status == "completed" else seen_status)
    ).rowcount
    if changed:
        return f"config {config_id}: max epochs {seen_max} → {max_epochs}"
    current = conn.execute(select(Config.status, Config.max_epochs).where(Config.config_id == config_id)).one_or_none()
    if current is not None and current.max_epochs == max_epochs:
        return f"config {config_id} already has max epochs {max_epochs}"
    now = _current_status(conn, config_id)
    raise ActionError(f"config {config_id} changed meanwhile (now {now}); nothing done")


def set_workload_status(conn: Connection, workload_id: int, status: str, seen: str) -> str:
    """Stop or resume all of a workload's unfinished configs (the workloads trigger does the cascade)."""
    changed = conn.execute(
        update(Workload).where(Workload.workload_id == workload_id, Workload.status == seen).values(status=status)
    ).rowcount
    if changed:
        return f"workload {workload_id}: {'stopped' if status == 'stopped' else 'resumed'}"
    now = conn.execute(select(Workload.status).where(Workload.workload_id == workload_id)).scalar_one_or_none()
    if now == status:
        return f"workload {workload_id} is already {now}"
    raise ActionError(f"workload {workload_id} changed meanwhile (now {now}); nothing done")


def add_config(conn: Connection, workload_id: int, params: dict[str, Any]) -> int:
    config_id: int = conn.execute(
        text("SELECT cerebro.add_config(:workload, CAST(:params AS jsonb))"),
        {"workload": workload_id, "params": json.dumps(params)},
    ).scalar_one()
    return config_id


def clone_config(conn: Connection, config_id: int, overrides: dict[str, Any]) -> int:
    """``clone_config``: a new config from the source's latest weights, with ``overrides``
    (lr, batch_size, max_epochs, ...)."""
    clone_id: int = conn.execute(
        text("SELECT cerebro.clone_config(:config, CAST(:overrides AS jsonb))"),
        {"config": config_id, "overrides": json.dumps(overrides)},
    ).scalar_one()
    return clone_id


def export_model(conn: Connection, config_id: int) -> bytes:
    """``export_model``: the config's latest model as a ``.keras`` file's bytes."""
    model: bytes = conn.execute(text("SELECT cerebro.export_model(:config)"), {"config": config_id}).scalar_one()
    return model


# ---- suggestions


def suggestions(conn: Connection, workload_id: int, config_id: int | None = None) -> list[Row]:
    """The workload's live suggestions (all, or one config's) as the view ``suggestions`` lists them: kind,
    category (``action`` or ``warning``), reason, evidence, expected effect, the SQL that carries it out."""
    return _rows(
        conn,
        "SELECT suggestion_id, workload_id, config_id, kind, category, non_destructive, reason, evidence,"
        " expected_effect, sql, created_at, epochs_done, status, max_epochs FROM suggestions"
        " WHERE workload_id = :workload AND (CAST(:config AS int) IS NULL OR config_id = :config)"
        " ORDER BY suggestion_id",
        workload=workload_id,
        config=config_id,
    )


def accept_suggestion(conn: Connection, suggestion_id: int) -> str:
    """``accept_suggestion``: carries it out as the caller and logs it; returns what it did. A stale or resolved
    one is refused (in :func:`transaction`: an :class:`ActionError` with the server's message and hint)."""
    done: str = conn.execute(text("SELECT cerebro.accept_suggestion(:id)"), {"id": suggestion_id}).scalar_one()
    return done


def dismiss_suggestion(conn: Connection, suggestion_id: int) -> str:
    """``dismiss_suggestion``: hides it; that kind is not suggested again for its config until its status
    changes. Returns what it did."""
    done: str = conn.execute(text("SELECT cerebro.dismiss_suggestion(:id)"), {"id": suggestion_id}).scalar_one()
    return done


# ---- imported models and features


def imported_models(conn: Connection) -> list[Row]:
    """The ``imported_model_catalog``: the pretrained models the user may fine-tune (``import_model``), with their
    shapes (per example), layer and weight counts and archive size."""
    return _rows(
        conn,
        "SELECT name, owner, description, input_shape, output_shape, layers, params, size_bytes, created_at"
        " FROM imported_model_catalog ORDER BY name",
    )


def model_layers(conn: Connection, name: str) -> list[Row]:
    """``model_layers``: the imported model's layers in order (index, name, class, output_shape, params,
    trainable); a nested model's own layers follow it, named ``outer/inner``."""
    return _rows(conn, "SELECT * FROM cerebro.model_layers(:name) ORDER BY index", name=name)


def features(conn: Connection) -> list[Row]:
    """The ``feature_catalog``: layer outputs of imported models materialized for the user's datasets (feature
    transfer), one row per (dataset, base, layer) with its shape, rows and stored size."""
    return _rows(
        conn,
        "SELECT feature_set_id, owner, dataset, base, layer, feature_shape, segments, train_rows, validation_rows,"
        " size_bytes, created_at FROM feature_catalog ORDER BY dataset, base, layer, feature_set_id",
    )


def drop_imported_model(conn: Connection, name: str) -> str:
    """``drop_imported_model``; refused while pending or running configs fine-tune it (the message names them)."""
    conn.execute(text("SELECT cerebro.drop_imported_model(:name)"), {"name": name})
    return f"imported model {name!r} dropped"


def drop_features(conn: Connection, dataset: str, base: str, layer: str) -> str:
    """``drop_features`` of one (dataset, base, layer); a later config that reads them materializes them again."""
    dropped = conn.execute(
        text("SELECT cerebro.drop_features(:dataset, :base, :layer)"),
        {"dataset": dataset, "base": base, "layer": layer},
    ).scalar_one()
    if not dropped:
        raise ActionError(f"no features of {base!r} at layer {layer!r} on dataset {dataset!r} left to drop")
    return f"features of {base!r} at layer {layer!r} on dataset {dataset!r} dropped"


# ---- autonomy


def workload_autonomy(conn: Connection, workload_id: int) -> Row | None:
    """The workload's autonomy, its budget and, on autopilot, what it has spent of which budget (``autopilot_spent``:
    ``epochs_spent`` and ``seconds_spent`` of ``effective_budget_epochs`` and ``_seconds``, its own or, for a
    drill-down, those of the workload whose budget it spends); None for an unknown workload."""
    found = _rows(
        conn,
        "SELECT w.autonomy, w.budget_epochs, w.budget_seconds, w.budget_of, w.budget_spent_at,"
        " s.epochs AS epochs_spent, s.seconds AS seconds_spent, s.budget_epochs AS effective_budget_epochs,"
        " s.budget_seconds AS effective_budget_seconds"
        " FROM workloads w LEFT JOIN LATERAL autopilot_spent(w.workload_id) s ON w.autonomy = 'autopilot'"
        " WHERE w.workload_id = :workload",
        workload=workload_id,
    )
    return found[0] if found else None


def set_workload_autonomy(
    conn: Connection,
    workload_id: int,
    autonomy: str,
    budget_epochs: int | None = None,
    budget_seconds: int | None = None,
) -> str:
    """Switch a workload to ``manual``, ``cruise`` or ``autopilot`` (with its budget: epochs and/or seconds; NULL
    for no bound of that kind), live: the system acts on it from the next epoch's end. Returns what happened."""
    changed = conn.execute(
        update(Workload)
        .where(Workload.workload_id == workload_id)
        .values(autonomy=autonomy, budget_epochs=budget_epochs, budget_seconds=budget_seconds)
    ).rowcount
    if not changed:
        raise ActionError(f"unknown workload {workload_id}")
    budget = ", ".join(
        f"{value} {unit}" for value, unit in ((budget_epochs, "epochs"), (budget_seconds, "s")) if value is not None
    )
    return f"workload {workload_id}: {autonomy}" + (f" (budget {budget})" if budget else "")

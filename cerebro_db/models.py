"""The schema's one readable description (Alembic migrations are generated from and checked against it).

Tables live in schema ``cerebro``. Users change ``workloads`` and ``configs`` with
plain SQL; everything else is written by the SQL API and ``run_unit``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cerebro_plpy.search_space import PROCEDURES

SCHEMA = "cerebro"
CONFIG_STATUSES = ("pending", "running", "stopped", "completed", "failed")
WORKLOAD_STATUSES = ("running", "stopped", "completed")
#: Who accepts a workload's suggestions: its user only, the system the non-destructive ones, or all within a budget.
AUTONOMY_LEVELS = ("manual", "cruise", "autopilot")
#: PostgreSQL's largest integer: seeds are drawn below it (SQL's seed_bound() and derived_seed(), 00_base/07_seeds.sql).
INT_MAX = 2_147_483_647


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


_TIMEOUT_RANGE = "{0} > interval '0' AND {0} <= interval '24 days'"  # statement_timeout's range


class Base(DeclarativeBase):
    metadata = MetaData(
        schema=SCHEMA,
        naming_convention={
            "pk": "%(table_name)s_pkey",
            "fk": "%(table_name)s_%(column_0_name)s_fkey",
            "ck": "%(table_name)s_%(constraint_name)s_check",
            "uq": "%(table_name)s_%(column_0_name)s_key",
            "ix": "%(table_name)s_%(column_0_name)s_idx",
        },
    )


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Segment(Base):
    """A unit of data-parallel execution; ``dsn`` is NULL for worker backends of this server."""

    __tablename__ = "segments"
    segment: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    dsn: Mapped[str | None] = mapped_column(Text)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (CheckConstraint("replication BETWEEN 1 AND num_segments", name="replication"),)
    dataset_id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    owner: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("CURRENT_USER"))
    source_table: Mapped[str] = mapped_column(Text, nullable=False)
    label_column: Mapped[str] = mapped_column(Text, nullable=False)
    feature_columns: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    feature_shape: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
    num_classes: Mapped[int] = mapped_column(Integer, nullable=False)
    #: Original label values; class index i means class_values[i].
    class_values: Mapped[Any] = mapped_column(JSONB, nullable=False)
    normalize: Mapped[str] = mapped_column(Text, nullable=False)
    #: Stored features are (raw - norm_shift) / norm_scale, per feature or per channel.
    norm_shift: Mapped[list[float]] = mapped_column(ARRAY(Float), nullable=False)
    norm_scale: Mapped[list[float]] = mapped_column(ARRAY(Float), nullable=False)
    num_segments: Mapped[int] = mapped_column(Integer, nullable=False)
    #: The training data is cut into num_segments // replication shards; shard k is on every segment s with
    #: s % (num_segments // replication) == k (segment_shard), and a config visits each shard once per epoch.
    replication: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    buffer_rows: Mapped[int] = mapped_column(Integer, nullable=False)
    validation_fraction: Mapped[float] = mapped_column(Float, nullable=False)
    train_rows: Mapped[int] = mapped_column(BigInteger, nullable=False)
    validation_rows: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _now()
    #: Text datasets only: the words of token ids 3, 4, ... (fitted on the training split).
    vocabulary: Mapped[list[str] | None] = mapped_column(ARRAY(Text))


class DatasetBuffer(Base):
    """A packed block of ``rows`` examples: float32 features ``x`` and float32 class indices ``y``."""

    __tablename__ = "dataset_buffers"
    __table_args__ = (
        CheckConstraint(_in("split", ("train", "validation")), name="split"),
        Index("dataset_buffers_shard_idx", "dataset_id", "split", "segment", "buffer_id"),
    )
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.dataset_id", ondelete="CASCADE"), primary_key=True)
    buffer_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    split: Mapped[str] = mapped_column(Text, nullable=False)
    segment: Mapped[int] = mapped_column(Integer, nullable=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    x: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    y: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class DatasetDuplicates(Base):
    """A dataset's exact duplicate rows (features and label equal), counted once from its buffers
    (``dataset_leakage``; a dataset never changes after prepare_dataset). Written only by that SECURITY DEFINER
    function, which counts them itself; row-level security shows its own datasets' to a user."""

    __tablename__ = "dataset_duplicates"
    __table_args__ = (CheckConstraint("validation_duplicates >= 0 AND train_duplicates >= 0", name="counts"),)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.dataset_id", ondelete="CASCADE"), primary_key=True)
    #: Validation rows that copy a training row: the splits may leak into each other.
    validation_duplicates: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: Training rows that copy an earlier training row.
    train_duplicates: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: How long the count took (it reads every buffer once).
    seconds: Mapped[float] = mapped_column(Float, nullable=False)
    counted_at: Mapped[datetime] = _now()


class Workload(Base):
    __tablename__ = "workloads"
    __table_args__ = (
        CheckConstraint(_in("status", WORKLOAD_STATUSES), name="status"),
        CheckConstraint(_in("procedure", PROCEDURES), name="procedure"),
        CheckConstraint("max_epochs > 0", name="max_epochs"),
        CheckConstraint(_TIMEOUT_RANGE.format("unit_timeout"), name="unit_timeout"),
        CheckConstraint(_in("autonomy", AUTONOMY_LEVELS), name="autonomy"),
        CheckConstraint("budget_epochs > 0", name="budget_epochs"),
        CheckConstraint("budget_seconds > 0", name="budget_seconds"),
        # An autopilot is bounded: by a budget of its own, or by the one of the workload whose drill-down it is.
        CheckConstraint(
            "autonomy <> 'autopilot' OR budget_epochs IS NOT NULL OR budget_seconds IS NOT NULL"
            " OR budget_of IS NOT NULL",
            name="autopilot_budget",
        ),
    )
    workload_id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("CURRENT_USER"))
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name", onupdate="CASCADE"), nullable=False, index=True)
    model: Mapped[str] = mapped_column(Text, nullable=False)
    search_space: Mapped[Any] = mapped_column(JSONB, nullable=False)
    procedure: Mapped[str] = mapped_column(Text, nullable=False)
    max_epochs: Mapped[int] = mapped_column(Integer, nullable=False)
    num_configs: Mapped[int | None] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    parent_workload_id: Mapped[int | None] = mapped_column(ForeignKey("workloads.workload_id"))
    warm_start: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'running'"))
    created_at: Mapped[datetime] = _now()
    #: A unit running longer is cancelled (rolled back) and its config fails. Left out (or set to NULL),
    #: the owner's ``limits.default_unit_timeout`` (a trigger fills it).
    unit_timeout: Mapped[timedelta] = mapped_column(Interval, nullable=False)
    #: ``manual``: suggestions only; ``cruise``: the system accepts the non-destructive ones; ``autopilot``: all those
    #: with an action, within the budget (sql/30_procedures/95_autonomy.sql). Users switch it live with UPDATE.
    autonomy: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'manual'"))
    #: The autopilot's budget: epochs its configs train (clones and drill-downs included) and wall time, both counted
    #: from ``autopilot_since``; either may be NULL (no bound of that kind), not both.
    budget_epochs: Mapped[int | None] = mapped_column(Integer)
    budget_seconds: Mapped[int | None] = mapped_column(Integer)
    #: Set by a trigger when the autonomy becomes ``autopilot``.
    autopilot_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: When the autopilot found its budget spent and stopped the configs; it accepts nothing more (a new budget
    #: clears it).
    budget_spent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: A drill-down the autopilot started: the workload whose budget its epochs spend.
    budget_of: Mapped[int | None] = mapped_column(ForeignKey("workloads.workload_id"))


class Config(Base):
    __tablename__ = "configs"
    __table_args__ = (
        CheckConstraint(_in("status", CONFIG_STATUSES), name="status"),
        CheckConstraint("max_epochs > 0", name="max_epochs"),
        CheckConstraint("epochs_done >= 0", name="epochs_done"),
        # claim_unit walks a workload's runnable configs by progress; the per-user quota counts them.
        Index(
            "configs_claim_idx",
            "workload_id",
            "epochs_done",
            "config_id",
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
    )
    config_id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    workload_id: Mapped[int] = mapped_column(
        ForeignKey("workloads.workload_id", ondelete="CASCADE"), nullable=False, index=True
    )
    params: Mapped[Any] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"))
    epochs_done: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    #: Filled from the workload by a trigger when an INSERT leaves it out.
    max_epochs: Mapped[int] = mapped_column(Integer, nullable=False)
    #: Seeds the initial weights (and dropout RNG) so a config is reproducible.
    seed: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text(f"floor(random() * {INT_MAX})::integer")
    )
    cloned_from: Mapped[int | None] = mapped_column(ForeignKey("configs.config_id", ondelete="SET NULL"))
    #: A transfer config's base as it was when the config was created (``imported_models.sha256``, set by the
    #: ``configs_transfer`` trigger): a base re-imported under its name since is refused, not silently used.
    base_sha256: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("CURRENT_USER"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    #: The row's latest change as ``config_events`` logs it (``created``, a status, or ``pruned``: a procedure's
    #: stop), who made it (``cerebro``: the system) and the system's reason. Stamped by the BEFORE triggers, logged
    #: by the AFTER trigger; users cannot write them (NULL on rows not changed since the upgrade to v0.4.2).
    event_kind: Mapped[str | None] = mapped_column(Text)
    event_actor: Mapped[str | None] = mapped_column(Text)
    event_detail: Mapped[str | None] = mapped_column(Text)


class ModelState(Base):
    """The latest committed state of a config and its progress through the current epoch."""

    __tablename__ = "model_states"
    config_id: Mapped[int] = mapped_column(ForeignKey("configs.config_id", ondelete="CASCADE"), primary_key=True)
    #: The state's file in the data directory's cerebro_states/<database oid>/ (sql/10_unit/30_state_files.sql).
    state_file: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    state_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: The shards visited in the current epoch (the column predates partial replication: with replication 1 a
    #: shard id is its segment's).
    visited_segments: Mapped[list[int]] = mapped_column(
        ARRAY(Integer), nullable=False, server_default=text("'{}'::integer[]")
    )
    epoch_rows: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    epoch_loss_sum: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("0"))
    epoch_metric_sum: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("0"))
    epoch_seconds: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("0"))
    updated_at: Mapped[datetime] = _now()


class Unit(Base):
    """The unit log: one row per committed hop (a unit rolled back by a crash leaves none)."""

    __tablename__ = "units"
    __table_args__ = (Index("units_config_epoch_idx", "config_id", "epoch"),)
    unit_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    config_id: Mapped[int] = mapped_column(ForeignKey("configs.config_id", ondelete="CASCADE"), nullable=False)
    segment: Mapped[int] = mapped_column(Integer, nullable=False)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    train_loss: Mapped[float] = mapped_column(Float, nullable=False)
    train_metric: Mapped[float] = mapped_column(Float, nullable=False)
    data_load_s: Mapped[float] = mapped_column(Float, nullable=False)
    state_load_s: Mapped[float] = mapped_column(Float, nullable=False)
    train_s: Mapped[float] = mapped_column(Float, nullable=False)
    state_save_s: Mapped[float] = mapped_column(Float, nullable=False)
    validation_s: Mapped[float | None] = mapped_column(Float)
    backend_pid: Mapped[int] = mapped_column(Integer, nullable=False)


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    config_id: Mapped[int] = mapped_column(ForeignKey("configs.config_id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    train_loss: Mapped[float] = mapped_column(Float, nullable=False)
    train_metric: Mapped[float] = mapped_column(Float, nullable=False)
    val_loss: Mapped[float] = mapped_column(Float, nullable=False)
    val_metric: Mapped[float] = mapped_column(Float, nullable=False)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)
    finished_at: Mapped[datetime] = _now()


class ConfigEvent(Base):
    """What happened to a config and who did it: user stop/resume, procedure prune, failure, clone.

    ``kind``: ``created``, the new status, ``pruned`` (a procedure, or the autopilot, stopped it), ``max_epochs`` (its
    budget changed, ``detail`` says from what to what), ``accepted`` (its owner, or the system under cruise control or
    autopilot, accepted a suggestion) or ``declined`` (the system left a suggestion to the user who steered the config
    by hand); decisions read the kind, never ``detail``. The trigger that logs an event sets ``at`` to
    ``clock_timestamp()``: the events of one transaction keep their order.
    """

    __tablename__ = "config_events"
    __table_args__ = (
        Index("config_events_config_idx", "config_id", "event_id"),
        # Deleting a suggestion (its workload's cascade) looks up the events linked to it.
        Index("config_events_suggestion_idx", "suggestion_id", postgresql_where=text("suggestion_id IS NOT NULL")),
    )
    event_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    config_id: Mapped[int] = mapped_column(ForeignKey("configs.config_id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    epochs_done: Mapped[int] = mapped_column(Integer, nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("CURRENT_USER"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    #: Kind ``accepted``: the suggestion accepted (``accept_suggestion``; the action's own events come first); kind
    #: ``declined``: the suggestion the system left to the user.
    suggestion_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("suggestion_log.suggestion_id", ondelete="SET NULL")
    )


#: What the system may suggest (the SQL view suggestion_kinds says what each carries out).
SUGGESTION_KINDS = (
    "stop",
    "clone_lower_lr",
    "clone_higher_lr",
    "extend",
    "resume",
    "drill_down",
    "divergence",
    "overfitting",
    "leakage",
    "dataset_too_small",
)
SUGGESTION_RESOLUTIONS = ("accepted", "dismissed", "superseded")


class Suggestion(Base):
    """Every suggestion the system made at an epoch's end, and what became of it (the view ``suggestions``: the live
    ones).

    Written by the system (``suggest_observe``) and by ``accept_suggestion`` / ``dismiss_suggestion`` after their
    checks; users read their own workloads' rows. ``config_*``: the config as the suggestion was made for it (one
    with an action is stale once the config's differ). ``action``: the arguments of what accepting it does (``sql``
    shows the same as the statement a user would type).
    """

    __tablename__ = "suggestion_log"
    __table_args__ = (
        CheckConstraint(_in("kind", SUGGESTION_KINDS), name="kind"),
        CheckConstraint(_in("resolution", SUGGESTION_RESOLUTIONS), name="resolution"),
        # The view and the epoch-end checks read a workload's unresolved suggestions.
        Index("suggestion_log_open_idx", "workload_id", "config_id", postgresql_where=text("resolution IS NULL")),
    )
    suggestion_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    workload_id: Mapped[int] = mapped_column(
        ForeignKey("workloads.workload_id", ondelete="CASCADE"), nullable=False, index=True
    )
    #: NULL for a suggestion about the whole workload (drill_down, dataset_too_small).
    config_id: Mapped[int | None] = mapped_column(ForeignKey("configs.config_id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    evidence: Mapped[Any] = mapped_column(JSONB, nullable=False)
    expected_effect: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[Any | None] = mapped_column(JSONB)
    sql: Mapped[str | None] = mapped_column(Text)
    config_epochs_done: Mapped[int | None] = mapped_column(Integer)
    config_status: Mapped[str | None] = mapped_column(Text)
    config_max_epochs: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _now()
    resolution: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


UNIT_OUTCOMES = ("committed", "crashed", "bystander", "retried", "failed", "unavailable", "abandoned")


class UnitAttempt(Base):
    """A claimed unit as the scheduler saw it end (NULL ``outcome``: in flight, or not yet settled).

    Committed before the unit trains, on a connection of its own, so that a unit which ends
    its server process still leaves its attempt: the crash and retry budgets count these.
    """

    __tablename__ = "unit_attempts"
    __table_args__ = (
        Index("unit_attempts_config_idx", "config_id", "attempt_id"),
        Index("unit_attempts_open_idx", "config_id", postgresql_where=text("outcome IS NULL")),
        CheckConstraint(_in("outcome", UNIT_OUTCOMES), name="outcome"),
    )
    attempt_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    config_id: Mapped[int] = mapped_column(ForeignKey("configs.config_id", ondelete="CASCADE"), nullable=False)
    segment: Mapped[int] = mapped_column(Integer, nullable=False)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = _now()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)


class RegisteredModel(Base):
    """A custom Keras script (``register_model``): ``entry_point(params)`` returns a compiled model."""

    __tablename__ = "registered_models"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    entry_point: Mapped[str] = mapped_column(Text, nullable=False)
    #: Per-backend caches of the compiled script are keyed by it.
    source_sha256: Mapped[str] = mapped_column(Text, nullable=False)
    owner: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("CURRENT_USER"))
    created_at: Mapped[datetime] = _now()


class ModelRegistration(Base):
    """Append-only audit of ``register_model``: written by it alone, changed by nobody but the schema owner."""

    __tablename__ = "model_registrations"
    registration_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    entry_point: Mapped[str] = mapped_column(Text, nullable=False)
    source_sha256: Mapped[str] = mapped_column(Text, nullable=False)
    #: The acting role (SET ROLE, else the login role), and the login role when they differ.
    registered_by: Mapped[str] = mapped_column(Text, nullable=False)
    session_role: Mapped[str | None] = mapped_column(Text)
    client_addr: Mapped[str | None] = mapped_column(Text)
    registered_at: Mapped[datetime] = _now()


class Limit(Base):
    """Admin-set limits: the row ``'*'`` applies to everyone, a role's own row overrides its non-NULL columns."""

    __tablename__ = "limits"
    __table_args__ = (
        CheckConstraint(
            "role_name <> '*' OR (max_active_configs IS NOT NULL AND max_epochs IS NOT NULL"
            " AND default_unit_timeout IS NOT NULL AND max_unit_timeout IS NOT NULL)",
            name="everyone",
        ),
        CheckConstraint("max_active_configs >= 0", name="max_active_configs"),
        CheckConstraint("max_epochs > 0", name="max_epochs"),
        CheckConstraint(_TIMEOUT_RANGE.format("default_unit_timeout"), name="default_unit_timeout"),
        CheckConstraint(_TIMEOUT_RANGE.format("max_unit_timeout"), name="max_unit_timeout"),
    )
    role_name: Mapped[str] = mapped_column(Text, primary_key=True)
    #: Configs pending or running, counted across all the role's workloads.
    max_active_configs: Mapped[int | None] = mapped_column(Integer)
    #: The most max_epochs a workload or config may have.
    max_epochs: Mapped[int | None] = mapped_column(Integer)
    default_unit_timeout: Mapped[timedelta | None] = mapped_column(Interval)
    max_unit_timeout: Mapped[timedelta | None] = mapped_column(Interval)


class ImportedModel(Base):
    """A pretrained model brought in with ``import_model``: its ``.keras`` archive and what the check found.

    Written only by ``import_model`` (after loading the archive in Keras' safe mode), read and dropped by its owner
    (and ``cerebro_admin``). ``name`` is unique across users, like a dataset's: configs name their base by it.
    """

    __tablename__ = "imported_models"
    __table_args__ = (
        CheckConstraint("name <> ''", name="name"),
        CheckConstraint("size_bytes = octet_length(keras_file)", name="size_bytes"),
    )
    imported_model_id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    owner: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("CURRENT_USER"))
    description: Mapped[str | None] = mapped_column(Text)
    #: The archive as imported (stored uncompressed: a .keras file is a zip already).
    keras_file: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: Per-backend caches of the loaded model can be keyed by it.
    sha256: Mapped[str] = mapped_column(Text, nullable=False)
    #: Per example (the batch dimension left out); an unknown output dimension is NULL.
    input_shape: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
    output_shape: Mapped[list[int | None]] = mapped_column(ARRAY(Integer), nullable=False)
    params: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: ``model.layers`` in order, a nested model's own after it (named ``outer/inner``): name, class, output_shape
    #: (Keras' text), output_shapes (per output, the batch dimension included), params, trainable.
    layers: Mapped[Any] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now()


class FeatureSet(Base):
    """The outputs of one layer of a frozen base for one owner's dataset (feature transfer, ``features.py``).

    Written by the units that materialize them (the scheduler's role), on the server that holds the shards; one per
    (owner, dataset, base archive, layer), reused by every config and workload that reads that layer with the base
    frozen; dropped with the dataset, or by ``drop_features``. ``base_name`` is the name it had then.
    """

    __tablename__ = "feature_sets"
    __table_args__ = (UniqueConstraint("owner", "dataset_id", "base_sha256", "layer"),)
    feature_set_id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    owner: Mapped[str] = mapped_column(Text, nullable=False)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.dataset_id", ondelete="CASCADE"), nullable=False, index=True
    )
    base_name: Mapped[str] = mapped_column(Text, nullable=False)
    base_sha256: Mapped[str] = mapped_column(Text, nullable=False)
    layer: Mapped[str] = mapped_column(Text, nullable=False)
    #: Per example: the layer's output shape without the batch dimension.
    feature_shape: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
    created_at: Mapped[datetime] = _now()


class FeatureBuffer(Base):
    """Packed float32 features ``x`` and class indices ``y`` of ``rows`` examples: one materialization batch of one
    segment's split, in the dataset buffers' order (``part`` counts within the segment's split)."""

    __tablename__ = "feature_buffers"
    __table_args__ = (CheckConstraint(_in("split", ("train", "validation")), name="split"),)
    feature_set_id: Mapped[int] = mapped_column(
        ForeignKey("feature_sets.feature_set_id", ondelete="CASCADE"), primary_key=True
    )
    split: Mapped[str] = mapped_column(Text, primary_key=True)
    segment: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    part: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    x: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    y: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class FeaturePass(Base):
    """The log of materialization passes: one staged pass of a base over one segment's split, computing ``layers``
    (one forward call per batch: ``batches``)."""

    __tablename__ = "feature_passes"
    __table_args__ = (CheckConstraint(_in("split", ("train", "validation")), name="split"),)
    pass_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    owner: Mapped[str] = mapped_column(Text, nullable=False)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.dataset_id", ondelete="CASCADE"), nullable=False, index=True
    )
    base_sha256: Mapped[str] = mapped_column(Text, nullable=False)
    layers: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    split: Mapped[str] = mapped_column(Text, nullable=False)
    segment: Mapped[int] = mapped_column(Integer, nullable=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    batches: Mapped[int] = mapped_column(Integer, nullable=False)
    batch_rows: Mapped[int] = mapped_column(Integer, nullable=False)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)
    backend_pid: Mapped[int] = mapped_column(Integer, nullable=False)
    finished_at: Mapped[datetime] = _now()

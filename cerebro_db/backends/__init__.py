"""Execution targets: where a segment's shard lives and how a unit runs there.

The scheduler and every decision (``claim_unit``) live on the coordinator. A backend
answers only: given a unit the coordinator's open transaction has claimed, how does it
train on the segment that owns the shard, and how does the new state come back to be
recorded in that same transaction (so a failure anywhere rolls the hop back whole)?

Every backend makes the same three calls (``cerebro_db/sql/10_unit/40_hop.sql``): the
coordinator hands out the unit's context and state (``unit_context``), ``train_hop``
trains one pass where the shard is and returns the new state, and the coordinator
records it (``record_hop``). They differ only in where ``train_hop`` runs:

- ``local``: on the coordinator itself, a worker backend of its own server
  (``run_unit``: the three calls in one).
- ``multi-server``: on the segment's own PostgreSQL server, which holds its shards.
- ``greenplum``: as an aggregate (``train_hop_agg``) over the rows of a ``DISTRIBUTED BY``
  table that live on one ``gp_segment_id``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import psycopg
from psycopg import errors

from cerebro_db.unit_failures import Farewell, classify


@contextlib.contextmanager
def on_the_segment(where: str, farewell: Farewell | None = None) -> Iterator[None]:
    """Around what runs where the segment computes: a database error raised there is classified
    there (:func:`classify`, with the segment connection's ``farewell``) and raised as a
    :class:`UnitFailure`; a cancel passes as it is (the scheduler knows whether it was the
    unit's ``unit_timeout``)."""
    try:
        yield
    except errors.QueryCanceled:
        raise
    except psycopg.Error as error:
        raise classify(error, farewell, where=where) from error


class SegmentExecutor(Protocol):
    """Runs the units of one segment, one at a time."""

    segment: int

    def run_unit(self, coordinator: psycopg.Connection[Any], config_id: int) -> dict[str, Any]:
        """Train the claimed ``config_id`` for one pass over this segment's shard and record the hop.

        Runs inside ``coordinator``'s open transaction, which holds the claim; returns
        the unit's summary. Errors raised where the segment computes come classified
        (:func:`on_the_segment`); the scheduler classifies the rest the same way, so every backend's
        failures mean the same: the segment's (the unit runs again), a crash or a retry (budgeted),
        or the config's own (it fails).
        """
        ...

    def close(self) -> None: ...


#: ``segments.dsn`` of a Greenplum / Cloudberry segment: its units run through the coordinator.
GREENPLUM = "greenplum"


def open_segment(segment: int, dsn: str | None, **connect: Any) -> SegmentExecutor:
    """The executor of a registered segment, by ``segments.dsn``: NULL for a local segment,
    ``'greenplum'`` for a Greenplum segment (content id = segment), else its server's URL.

    ``connect`` goes to the segment server's connection (options, passfile, ...).
    """
    # Here, not at the top: these modules import this one's names.
    from cerebro_db.backends.greenplum import GreenplumSegment
    from cerebro_db.backends.local import LocalSegment
    from cerebro_db.backends.multi_server import ServerSegment

    if dsn is None:
        return LocalSegment(segment)
    if dsn == GREENPLUM:
        return GreenplumSegment(segment)
    return ServerSegment(segment, dsn, **connect)

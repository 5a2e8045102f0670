"""``local``: the segment is a worker backend of the coordinator's own server."""

from __future__ import annotations

from typing import Any

import psycopg


class LocalSegment:
    """The unit's three calls on the coordinator itself, which holds the shard: ``run_unit``
    (``cerebro_db/sql/10_unit/40_hop.sql``) is ``unit_context``, ``train_hop`` and ``record_hop``."""

    def __init__(self, segment: int) -> None:
        self.segment = segment

    def run_unit(self, coordinator: psycopg.Connection[Any], config_id: int) -> dict[str, Any]:
        row = coordinator.execute("SELECT run_unit(%s, %s)", [config_id, self.segment]).fetchone()
        assert row is not None
        result: dict[str, Any] = row[0]
        return result

    def close(self) -> None:
        """Nothing of its own to close: it runs on the coordinator's connection."""

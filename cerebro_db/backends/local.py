"""``local``: the segment is a worker backend of the coordinator's own server."""

from __future__ import annotations

from typing import Any

import psycopg


class LocalSegment:
    """One ``run_unit`` call on the coordinator trains on its own shard and records the hop."""

    def __init__(self, segment: int) -> None:
        self.segment = segment

    def run_unit(self, coordinator: psycopg.Connection[Any], config_id: int) -> dict[str, Any]:
        row = coordinator.execute("SELECT run_unit(%s, %s)", [config_id, self.segment]).fetchone()
        assert row is not None
        result: dict[str, Any] = row[0]
        return result

    def close(self) -> None:
        """Nothing of its own to close: it runs on the coordinator's connection."""

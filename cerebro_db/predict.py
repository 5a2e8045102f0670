"""``predict`` on the segments side by side: the output table is created and committed first,
then each part of the rows (the dataset's segment count of them, split by the hash of the id)
runs as one short PL/Python call on its own connection, as the scheduler runs units.

SQL's ``predict()`` runs the same parts one after another in one transaction; PostgreSQL's
own parallel workers cannot run them, because PL/Python wraps every query in a
subtransaction, which parallel mode forbids.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from psycopg import sql

from cerebro_db.connection import connect


def _part(dsn: str, arguments: list[object]) -> int:
    with connect(dsn, application_name="cerebro predict") as conn:
        row = conn.execute(
            "SELECT cerebro.raise_if_error(cerebro._predict_part(%s, %s, %s, %s, %s, %s, %s))::bigint", arguments
        ).fetchone()
    assert row is not None
    written: int = row[0]
    return written


def predict_on_segments(dsn: str, config_id: int, source_table: str, id_column: str, output_table: str) -> int:
    """Like ``SELECT predict(...)``, with the parts in parallel; returns the rows written.

    Names resolve on the client search path (:data:`cerebro_db.connection.CLIENT_SEARCH_PATH`): a table in ``public`` is
    ``public.name``. Parts commit one by one, so a failed part drops the output table rather than leave it half full.
    """
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT b.output_schema, b.output_name, b.parts, %s::regclass::oid"
            " FROM cerebro._predict_begin(%s, %s, %s, %s) b",
            [source_table, config_id, source_table, id_column, output_table],
        ).fetchone()
    assert row is not None
    schema, name, parts, relation = row
    try:
        with ThreadPoolExecutor(parts, thread_name_prefix="predict-part") as pool:
            counts = pool.map(
                lambda part: _part(dsn, [config_id, relation, id_column, schema, name, part, parts]), range(parts)
            )
            return sum(counts)
    except BaseException:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        raise

"""Where the database is and how to connect to it: the one place for the DSN, the search paths,
psycopg connections and SQLAlchemy engines (the CLI, the dashboard, Alembic, the scheduler use these).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import NullPool

from cerebro_db.cluster import LocalCluster, default_home

#: The system's connections (scheduler, installer, segment servers) run as the schema's owner: they resolve
#: names in cerebro only, never in a schema where users may create objects.
SEARCH_PATH = "-c search_path=cerebro,pg_temp"
#: Operators' and users' clients (the CLI, the dashboard): their own schema (adduser makes it), then the API,
#: never ``public``: a tenant who may create there could shadow a call with a better-matching function
#: (``public.export_model(bigint)``, or an operator), which would then run with the operator's rights. The
#: calls are schema-qualified as well; tables elsewhere are named ``schema.table``.
CLIENT_SEARCH_PATH = '-c search_path="$user",cerebro,pg_temp'

_LIBPQ_SCHEMES = ("postgresql://", "postgres://")


def default_dsn() -> str:
    """``$CEREBRO_DSN``, else the embedded cluster's (``cerebro-db dsn --show-password``)."""
    return os.environ.get("CEREBRO_DSN") or LocalCluster(default_home()).config.dsn()


def sqlalchemy_url(dsn: str) -> str:
    """A libpq URL (``postgresql://`` or ``postgres://``) as SQLAlchemy's URL with psycopg 3 as the driver."""
    for scheme in _LIBPQ_SCHEMES:
        if dsn.startswith(scheme):
            return "postgresql+psycopg://" + dsn.removeprefix(scheme)
    raise ValueError(f"{dsn!r} is not a libpq URL: give postgresql://user@host:port/database")


def connect(dsn: str | None = None, **options: Any) -> psycopg.Connection[Any]:
    """A client's psycopg connection to ``dsn`` (default: :func:`default_dsn`) on :data:`CLIENT_SEARCH_PATH`;
    ``options`` go to :func:`psycopg.connect` (``autocommit``, ``application_name``, ...)."""
    return psycopg.connect(dsn or default_dsn(), options=CLIENT_SEARCH_PATH, **options)


#: The dashboard's pool: few connections, each checked before use (the server may have restarted meanwhile).
SMALL_POOL: Mapping[str, Any] = MappingProxyType({"pool_pre_ping": True, "pool_size": 2, "max_overflow": 4})


def make_engine(dsn: str | None = None, **pool: Any) -> Engine:
    """A client's engine for ``dsn`` (default: :func:`default_dsn`) on :data:`CLIENT_SEARCH_PATH`; ``pool``:
    SQLAlchemy's pool options (default: :data:`SMALL_POOL`). The API's calls name ``cerebro.`` as well."""
    return create_engine(
        sqlalchemy_url(dsn or default_dsn()), connect_args={"options": CLIENT_SEARCH_PATH}, **(pool or SMALL_POOL)
    )


@contextmanager
def sqlalchemy_connection(dsn: str | None = None) -> Iterator[Connection]:
    """One client connection for a command's life (the CLI's, for :mod:`cerebro_db.client`), closed afterwards."""
    engine = make_engine(dsn, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()

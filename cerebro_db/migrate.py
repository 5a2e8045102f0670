"""Alembic, configured in code from package-relative paths."""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config

from cerebro_db.cluster import LocalCluster, default_home

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def sqlalchemy_url(dsn: str) -> str:
    """A libpq URL (``postgresql://...``) as SQLAlchemy's psycopg 3 URL."""
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


def database_url() -> str:
    """CEREBRO_DSN if set, else the running embedded cluster's."""
    return sqlalchemy_url(os.environ.get("CEREBRO_DSN") or LocalCluster(default_home()).config.dsn())


def alembic_config(dsn: str | None = None) -> Config:
    config = Config(os.path.join(PACKAGE_DIR, "alembic.ini"))
    config.set_main_option("script_location", os.path.join(PACKAGE_DIR, "migrations"))
    if dsn is not None:
        config.attributes["url"] = sqlalchemy_url(dsn)
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str) -> None:
    command.downgrade(alembic_config(dsn), revision)

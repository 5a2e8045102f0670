"""Alembic, configured in code from package-relative paths."""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config

from cerebro_db.connection import sqlalchemy_url

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


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

"""Alembic environment: target metadata from cerebro_db.models, version table in schema cerebro."""

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema

from cerebro_db.connection import default_dsn, sqlalchemy_url
from cerebro_db.models import SCHEMA, Base

config = context.config


def run_migrations_online() -> None:
    url = config.attributes.get("url") or sqlalchemy_url(default_dsn())
    # The installer puts cerebro first on the database's search_path; Alembic must see
    # it as a named schema, not the default one, to compare tables correctly.
    engine = create_engine(url, poolclass=NullPool, connect_args={"options": "-c search_path=public"})
    with engine.connect() as connection:
        connection.execute(CreateSchema(SCHEMA, if_not_exists=True))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            version_table_schema=SCHEMA,
            include_schemas=True,
            include_name=lambda name, type_, _parent: type_ != "schema" or name == SCHEMA,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()

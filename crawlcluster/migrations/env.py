"""Alembic environment: migrations run on the connection crawlcluster.db hands over."""

from alembic import context

from crawlcluster.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `crawlcluster initdb`, which supplies the database connection")

context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()

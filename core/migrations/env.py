"""Alembic's entry point for chunkq's migrations: online only, on the connection chunkq hands it.

``runner.migrate`` puts the connection (already inside its one transaction,
under the schema lock) into the configuration; ``begin_transaction`` below
is then a no-op and every step runs in that transaction.
"""

from alembic import context
from chunkq.core import schema

config = context.config
connection = config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError("chunkq's migrations run through chunkq (`chunkq db upgrade`), on a connection it holds "
                       "under its schema lock; there is no offline mode")

context.configure(
    connection=connection,
    target_metadata=schema.metadata,
    version_table=schema.VERSION_TABLE,
    # every step in the caller's one transaction: all of them happen, or none
    transaction_per_migration=False,
    on_version_apply=[config.attributes["on_step"]],  # type: ignore[arg-type]  # alembic iterates it: a list of callables
)
with context.begin_transaction():
    context.run_migrations()

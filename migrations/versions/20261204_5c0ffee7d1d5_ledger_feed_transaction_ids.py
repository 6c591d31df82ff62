"""ledger feed transaction ids

The API feed orders events by the transaction that inserted them (`txid`, then id) and, on
PostgreSQL, serves only events of transactions that have finished, so an event committed late by a
long transaction is never skipped. PostgreSQL fills `txid` itself (a server default, not in the
models); SQLite, one writer at a time, leaves it NULL and the feed reads NULL as 0. Events from
before this migration keep NULL and come first.

Revision ID: 5c0ffee7d1d5
Revises: 4de346371416
Created: 2026-12-04 09:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '5c0ffee7d1d5'
down_revision = '4de346371416'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('txid', sa.BigInteger(), nullable=True))
        batch_op.create_index('ix_consent_events_txid_id', ['txid', 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        # Set after adding the column, so that existing events keep NULL (a default given with
        # the column would fill them with this migration's transaction id).
        op.alter_column('consent_events', 'txid',
                        server_default=sa.text('(pg_current_xact_id()::text::bigint)'))


def downgrade():
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_events_txid_id')
        batch_op.drop_column('txid')

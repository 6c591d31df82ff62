"""ledger feed transaction ids

The API feed orders events by the transaction that inserted them (`txid`, then id) and, on
PostgreSQL, serves only events of transactions that have finished, so an event committed late by a
long transaction is never skipped. PostgreSQL fills `txid` itself (a server default, not in the
models); on SQLite, one writer at a time, ids are in commit order already and `txid` is 0. Events
from before this migration get 0 and come first. The column is NOT NULL, so the feed's
`(txid, id) > cursor` reads straight from the index.

Revision ID: 5c0ffee7d1d5
Revises: 4de346371416
Created: 2026-12-03 07:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '5c0ffee7d1d5'
down_revision = '4de346371416'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.add_column('consent_events', sa.Column('txid', sa.BigInteger(), nullable=True))
        op.execute("update consent_events set txid = 0")
        # Set after filling the existing events, which would otherwise all get this migration's
        # own transaction id.
        op.alter_column('consent_events', 'txid', nullable=False,
                        server_default=sa.text('(pg_current_xact_id()::text::bigint)'))
        op.create_index('ix_consent_events_txid_id', 'consent_events', ['txid', 'id'])
        return
    # SQLite adds a NOT NULL column with a default in place (no table rebuild).
    op.add_column('consent_events', sa.Column('txid', sa.BigInteger(), nullable=False,
                                              server_default=sa.text('0')))
    op.create_index('ix_consent_events_txid_id', 'consent_events', ['txid', 'id'])


def downgrade():
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_events_txid_id')
        batch_op.drop_column('txid')

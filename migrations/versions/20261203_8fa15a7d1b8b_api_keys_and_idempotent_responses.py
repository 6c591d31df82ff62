"""api keys and idempotent responses

Keys for the REST API (SHA-256 hashes, scopes, revocation) and the first response to each write
sent with an Idempotency-Key, kept for its retries.

Revision ID: 8fa15a7d1b8b
Revises: 3594970d94af
Created: 2026-12-03 06:11:13.030027
"""
from alembic import op
import sqlalchemy as sa
from consent_service.models import UTCDateTime

revision = '8fa15a7d1b8b'
down_revision = '3594970d94af'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.String(length=200), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('last_used_at', UTCDateTime(), nullable=True),
    sa.Column('revoked_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash')),
    sa.UniqueConstraint('name', name=op.f('uq_api_keys_name')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    op.create_table('api_idempotent_responses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('api_key_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_api_idempotent_responses_api_key_id_api_keys'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_idempotent_responses')),
    sa.UniqueConstraint('api_key_id', 'key', name='uq_api_idempotent_responses_api_key_id_key')
    )
    with op.batch_alter_table('api_idempotent_responses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_idempotent_responses_expires_at'), ['expires_at'], unique=False)



def downgrade():
    with op.batch_alter_table('api_idempotent_responses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_idempotent_responses_expires_at'))

    op.drop_table('api_idempotent_responses')
    op.drop_table('api_keys')

"""policy notices

One row per (policy version, patron) told of a material change, written in the transaction that
queues the notice, so that `policy notify` stopped halfway and run again writes only to the rest.
A policy version's summary in other languages (`summaries`, e.g. {"es": ...}), for the preference
center and the notice in the patron's language.

Revision ID: 2df1696d3439
Revises: c4d1a9e7b2f0
Created: 2026-12-03 07:57:26.058996
"""
from alembic import op
import sqlalchemy as sa
from consent_service.models import UTCDateTime

revision = '2df1696d3439'
down_revision = 'c4d1a9e7b2f0'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('summaries', sa.JSON(), nullable=True))
    op.create_table('policy_notices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('policy_version_id', sa.Integer(), nullable=False),
    sa.Column('patron_id', sa.Integer(), nullable=False),
    sa.Column('outbox_message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('queued_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['outbox_message_id'], ['outbox_messages.id'], name=op.f('fk_policy_notices_outbox_message_id_outbox_messages'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['patron_id'], ['patrons.id'], name=op.f('fk_policy_notices_patron_id_patrons'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['policy_version_id'], ['policy_versions.id'], name=op.f('fk_policy_notices_policy_version_id_policy_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_notices')),
    sa.UniqueConstraint('policy_version_id', 'patron_id', name='uq_policy_notices_policy_version_id_patron_id')
    )
    with op.batch_alter_table('policy_notices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_policy_notices_patron_id'), ['patron_id'], unique=False)



def downgrade():
    with op.batch_alter_table('policy_notices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_policy_notices_patron_id'))

    op.drop_table('policy_notices')
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.drop_column('summaries')

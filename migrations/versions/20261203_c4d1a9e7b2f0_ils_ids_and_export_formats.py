"""patrons keep the ILS's own id (Koha borrowernumber, Sierra record number, Polaris PatronID);
export manifests record the file's format (a mailing tool's columns)

Revision ID: c4d1a9e7b2f0
Revises: 5c0ffee7d1d5
Created: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa

revision = 'c4d1a9e7b2f0'
down_revision = '5c0ffee7d1d5'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('patrons', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ils_id', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_patrons_ils_id'), ['ils_id'], unique=False)
    with op.batch_alter_table('export_manifests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('format', sa.String(length=32), server_default='generic',
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('export_manifests', schema=None) as batch_op:
        batch_op.drop_column('format')
    with op.batch_alter_table('patrons', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patrons_ils_id'))
        batch_op.drop_column('ils_id')

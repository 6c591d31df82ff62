"""exported patrons

The disclosure record: the patrons each export's file contained (the address key for email, and
the decision in force that let each in), written with the export's manifest.

Revision ID: 4de346371416
Revises: 7d1435de2969
Created: 2026-12-03 06:11:31.194739
"""
from alembic import op
import sqlalchemy as sa


revision = '4de346371416'
down_revision = '7d1435de2969'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('exported_patrons',
    sa.Column('export_id', sa.Integer(), nullable=False),
    sa.Column('patron_id', sa.Integer(), nullable=False),
    sa.Column('address_key', sa.String(length=64), nullable=True),
    sa.Column('decision_event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['export_id'], ['export_manifests.id'], name=op.f('fk_exported_patrons_export_id_export_manifests')),
    sa.ForeignKeyConstraint(['patron_id'], ['patrons.id'], name=op.f('fk_exported_patrons_patron_id_patrons')),
    sa.PrimaryKeyConstraint('export_id', 'patron_id', name=op.f('pk_exported_patrons'))
    )
    with op.batch_alter_table('exported_patrons', schema=None) as batch_op:
        batch_op.create_index('ix_exported_patrons_patron_id', ['patron_id'], unique=False)


def downgrade():
    with op.batch_alter_table('exported_patrons', schema=None) as batch_op:
        batch_op.drop_index('ix_exported_patrons_patron_id')

    op.drop_table('exported_patrons')

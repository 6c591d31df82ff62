"""topic names per language

Revision ID: a1f0c3d2e8b4
Revises: 655b7bdcf734
Created: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa

revision = 'a1f0c3d2e8b4'
down_revision = '655b7bdcf734'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('topics', schema=None) as batch_op:
        batch_op.add_column(sa.Column('names', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('topics', schema=None) as batch_op:
        batch_op.drop_column('names')

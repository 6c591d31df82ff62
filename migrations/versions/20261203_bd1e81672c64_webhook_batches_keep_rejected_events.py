"""webhook batches keep rejected events

Each SendGrid batch records the events it could not apply (counted `invalid`): their index in the
batch and a one-line reason, for operators (`flask sendgrid failures`). NULL: none, or a batch
processed before this revision.

Revision ID: bd1e81672c64
Revises: a1f0c3d2e8b4
Created: 2026-12-03 05:29:24.526374
"""
from alembic import op
import sqlalchemy as sa


revision = 'bd1e81672c64'
down_revision = 'a1f0c3d2e8b4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('webhook_batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rejected', sa.JSON(none_as_null=True), nullable=True))


def downgrade():
    with op.batch_alter_table('webhook_batches', schema=None) as batch_op:
        batch_op.drop_column('rejected')

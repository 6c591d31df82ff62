"""staff sessions end server-side: a per-member session epoch, bumped at sign-out

A staff login stores the member's `session_epoch` in its (signed, client-side) session; the
user loader refuses a session whose number is not the member's current one. Signing out and
deactivation add one, so every copy of every session cookie the member holds stops working.
Existing accounts start at 0; sessions signed in before this migration carry no number and are
signed out once.

Revision ID: e5a0c3f19b27
Revises: b7c1e9a2d4f6
Created: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa

revision = 'e5a0c3f19b27'
down_revision = 'b7c1e9a2d4f6'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_epoch', sa.Integer(), server_default=sa.text('0'),
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.drop_column('session_epoch')

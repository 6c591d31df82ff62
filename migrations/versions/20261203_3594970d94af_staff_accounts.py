"""staff accounts

People who sign in to the staff pages: argon2 password hashes, a role, and the lockout state.

Revision ID: 3594970d94af
Revises: bd1e81672c64
Created: 2026-12-03 06:00:31.766841
"""
from alembic import op
import sqlalchemy as sa
from consent_service.models import UTCDateTime

revision = '3594970d94af'
down_revision = 'bd1e81672c64'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('staff_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', UTCDateTime(), nullable=True),
    sa.Column('last_login_at', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_users')),
    sa.UniqueConstraint('email', name=op.f('uq_staff_users_email'))
    )


def downgrade():
    op.drop_table('staff_users')

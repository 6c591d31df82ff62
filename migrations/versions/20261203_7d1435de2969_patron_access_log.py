"""patron access log

Who looked at which patron's record and when (the patron page, the photo roster), and the indexes
the staff search's case-insensitive name prefix match uses.

Revision ID: 7d1435de2969
Revises: 8fa15a7d1b8b
Created: 2026-12-03 06:08:42.740213
"""
from alembic import op
import sqlalchemy as sa
from consent_service.models import UTCDateTime

revision = '7d1435de2969'
down_revision = '8fa15a7d1b8b'
branch_labels = None
depends_on = None

NAME_INDEXES = {'ix_patrons_lower_first_name': 'first_name',
                'ix_patrons_lower_last_name': 'last_name'}


def upgrade():
    op.create_table('patron_access_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('staff_user_id', sa.Integer(), nullable=False),
    sa.Column('patron_id', sa.Integer(), nullable=False),
    sa.Column('what', sa.String(length=16), nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.CheckConstraint("what in ('view', 'photo_roster')", name=op.f('ck_patron_access_log_what')),
    sa.ForeignKeyConstraint(['patron_id'], ['patrons.id'], name=op.f('fk_patron_access_log_patron_id_patrons')),
    sa.ForeignKeyConstraint(['staff_user_id'], ['staff_users.id'], name=op.f('fk_patron_access_log_staff_user_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patron_access_log'))
    )
    with op.batch_alter_table('patron_access_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patron_access_log_at'), ['at'], unique=False)
        batch_op.create_index('ix_patron_access_log_patron_id_at', ['patron_id', 'at'], unique=False)
        batch_op.create_index('ix_patron_access_log_staff_user_id_at', ['staff_user_id', 'at'], unique=False)
    # text_pattern_ops: PostgreSQL uses the index for LIKE 'prefix%' whatever the collation
    ops = ' text_pattern_ops' if op.get_bind().dialect.name == 'postgresql' else ''
    for name, column in NAME_INDEXES.items():
        op.execute(f'CREATE INDEX {name} ON patrons (lower({column}){ops})')


def downgrade():
    for name in NAME_INDEXES:
        op.drop_index(name, table_name='patrons')
    with op.batch_alter_table('patron_access_log', schema=None) as batch_op:
        batch_op.drop_index('ix_patron_access_log_staff_user_id_at')
        batch_op.drop_index('ix_patron_access_log_patron_id_at')
        batch_op.drop_index(batch_op.f('ix_patron_access_log_at'))

    op.drop_table('patron_access_log')

"""initial schema

Revision ID: 23c7e4156b3a
Revises: 
Created: 2026-11-29 01:28:36.669523
"""
from alembic import op
import sqlalchemy as sa
from consent_service.models import UTCDateTime

revision = '23c7e4156b3a'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('export_manifests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('purpose', sa.String(length=40), nullable=False),
    sa.Column('topic', sa.String(length=64), nullable=True),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('excluded_counts', sa.JSON(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('file_name', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_export_manifests'))
    )
    op.create_table('patrons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('card_number', sa.String(length=64), nullable=False),
    sa.Column('first_name', sa.String(length=200), nullable=False),
    sa.Column('last_name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('address_key', sa.String(length=64), nullable=True),
    sa.Column('birth_date', sa.Date(), nullable=True),
    sa.Column('preferred_language', sa.String(length=2), nullable=False),
    sa.Column('street', sa.String(length=300), nullable=False),
    sa.Column('city', sa.String(length=120), nullable=False),
    sa.Column('state', sa.String(length=60), nullable=False),
    sa.Column('postal_code', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint("preferred_language in ('en', 'es')", name=op.f('ck_patrons_preferred_language')),
    sa.CheckConstraint("status in ('active', 'inactive')", name=op.f('ck_patrons_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patrons')),
    sa.UniqueConstraint('card_number', name=op.f('uq_patrons_card_number')),
    sa.UniqueConstraint('public_id', name=op.f('uq_patrons_public_id'))
    )
    with op.batch_alter_table('patrons', schema=None) as batch_op:
        batch_op.create_index('ix_patrons_address_key_id', ['address_key', 'id'], unique=False)

    op.create_table('policy_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.Column('effective_at', UTCDateTime(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('material', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_versions')),
    sa.UniqueConstraint('version', name=op.f('uq_policy_versions_version'))
    )
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_policy_versions_effective_at'), ['effective_at'], unique=False)

    op.create_table('suppression_sync_jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('address_key', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('available_at', UTCDateTime(), nullable=False),
    sa.Column('finished_at', UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suppression_sync_jobs'))
    )
    with op.batch_alter_table('suppression_sync_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_suppression_sync_jobs_address_key'), ['address_key'], unique=False)
        batch_op.create_index('ix_suppression_sync_jobs_status_available', ['status', 'available_at'], unique=False)

    op.create_table('topics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('sendgrid_group_id', sa.Integer(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_topics')),
    sa.UniqueConstraint('key', name=op.f('uq_topics_key')),
    sa.UniqueConstraint('sendgrid_group_id', name=op.f('uq_topics_sendgrid_group_id'))
    )
    op.create_table('undeliverable_addresses',
    sa.Column('address_key', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('address_key', name=op.f('pk_undeliverable_addresses'))
    )
    op.create_table('webhook_batches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('received_at', UTCDateTime(), nullable=False),
    sa.Column('signed_at', UTCDateTime(), nullable=True),
    sa.Column('body', sa.LargeBinary(), nullable=True),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('available_at', UTCDateTime(), nullable=False),
    sa.Column('processed_at', UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_batches'))
    )
    with op.batch_alter_table('webhook_batches', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_batches_status_available', ['status', 'available_at'], unique=False)

    op.create_table('consent_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('patron_id', sa.Integer(), nullable=True),
    sa.Column('address_key', sa.String(length=64), nullable=True),
    sa.Column('purpose', sa.String(length=40), nullable=False),
    sa.Column('topic', sa.String(length=64), nullable=False),
    sa.Column('decision', sa.String(length=8), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=16), nullable=False),
    sa.Column('actor_ref', sa.String(length=64), nullable=True),
    sa.Column('policy_version_id', sa.Integer(), nullable=True),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.Column('recorded_at', UTCDateTime(), nullable=False),
    sa.Column('effective', sa.Boolean(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('sg_event_id', sa.String(length=128), nullable=True),
    sa.CheckConstraint("decision in ('opt_in', 'opt_out')", name=op.f('ck_consent_events_decision')),
    sa.CheckConstraint('patron_id is not null or address_key is not null', name=op.f('ck_consent_events_subject')),
    sa.ForeignKeyConstraint(['patron_id'], ['patrons.id'], name=op.f('fk_consent_events_patron_id_patrons')),
    sa.ForeignKeyConstraint(['policy_version_id'], ['policy_versions.id'], name=op.f('fk_consent_events_policy_version_id_policy_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_events')),
    sa.UniqueConstraint('sg_event_id', name=op.f('uq_consent_events_sg_event_id'))
    )
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.create_index('ix_consent_events_address_purpose', ['address_key', 'purpose', 'topic'], unique=False)
        batch_op.create_index('ix_consent_events_patron_purpose', ['patron_id', 'purpose', 'topic'], unique=False)

    op.create_table('guardian_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('child_id', sa.Integer(), nullable=False),
    sa.Column('guardian_id', sa.Integer(), nullable=True),
    sa.Column('guardian_email', sa.String(length=320), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('guardian_id is not null or guardian_email is not null', name=op.f('ck_guardian_links_someone')),
    sa.ForeignKeyConstraint(['child_id'], ['patrons.id'], name=op.f('fk_guardian_links_child_id_patrons'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['guardian_id'], ['patrons.id'], name=op.f('fk_guardian_links_guardian_id_patrons'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_guardian_links')),
    sa.UniqueConstraint('child_id', 'guardian_email', name='uq_guardian_links_child_id_guardian_email'),
    sa.UniqueConstraint('child_id', 'guardian_id', name='uq_guardian_links_child_id_guardian_id'),
    sa.UniqueConstraint('public_id', name=op.f('uq_guardian_links_public_id'))
    )
    with op.batch_alter_table('guardian_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_guardian_links_child_id'), ['child_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_guardian_links_guardian_id'), ['guardian_id'], unique=False)

    op.create_table('outbox_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('template', sa.String(length=64), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('patron_id', sa.Integer(), nullable=True),
    sa.Column('to_address', sa.String(length=320), nullable=True),
    sa.Column('from_address', sa.String(length=320), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('text_body', sa.Text(), nullable=False),
    sa.Column('html_body', sa.Text(), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('custom_args', sa.JSON(), nullable=False),
    sa.Column('asm_group_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('available_at', UTCDateTime(), nullable=False),
    sa.Column('sent_at', UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['patron_id'], ['patrons.id'], name=op.f('fk_outbox_messages_patron_id_patrons'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages'))
    )
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_messages_status_available', ['status', 'available_at'], unique=False)

    op.create_table('sendgrid_event_receipts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('sg_event_id', sa.String(length=128), nullable=True),
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('asm_group_id', sa.Integer(), nullable=True),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.Column('received_at', UTCDateTime(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['webhook_batches.id'], name=op.f('fk_sendgrid_event_receipts_batch_id_webhook_batches'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sendgrid_event_receipts')),
    sa.UniqueConstraint('content_hash', name=op.f('uq_sendgrid_event_receipts_content_hash')),
    sa.UniqueConstraint('sg_event_id', name=op.f('uq_sendgrid_event_receipts_sg_event_id'))
    )
    with op.batch_alter_table('sendgrid_event_receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sendgrid_event_receipts_batch_id'), ['batch_id'], unique=False)

    op.create_table('address_decisions',
    sa.Column('address_key', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=40), nullable=False),
    sa.Column('topic', sa.String(length=64), nullable=False),
    sa.Column('decision', sa.String(length=8), nullable=False),
    sa.Column('actor', sa.String(length=16), nullable=False),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['consent_events.id'], name=op.f('fk_address_decisions_event_id_consent_events')),
    sa.PrimaryKeyConstraint('address_key', 'purpose', 'topic', name=op.f('pk_address_decisions'))
    )
    op.create_table('address_suppressions',
    sa.Column('address_key', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('suppressed_at', UTCDateTime(), nullable=False),
    sa.Column('lifted_at', UTCDateTime(), nullable=True),
    sa.Column('lifted_by_event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['lifted_by_event_id'], ['consent_events.id'], name=op.f('fk_address_suppressions_lifted_by_event_id_consent_events')),
    sa.PrimaryKeyConstraint('address_key', name=op.f('pk_address_suppressions'))
    )
    op.create_table('family_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('child_id', sa.Integer(), nullable=False),
    sa.Column('guardian_link_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('done_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint("kind in ('download', 'erasure')", name=op.f('ck_family_requests_kind')),
    sa.CheckConstraint("status in ('open', 'done')", name=op.f('ck_family_requests_status')),
    sa.ForeignKeyConstraint(['child_id'], ['patrons.id'], name=op.f('fk_family_requests_child_id_patrons'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['guardian_link_id'], ['guardian_links.id'], name=op.f('fk_family_requests_guardian_link_id_guardian_links'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_family_requests'))
    )
    with op.batch_alter_table('family_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_family_requests_child_id'), ['child_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_family_requests_guardian_link_id'), ['guardian_link_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_family_requests_status'), ['status'], unique=False)

    op.create_table('guardian_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('child_id', sa.Integer(), nullable=False),
    sa.Column('guardian_link_id', sa.Integer(), nullable=True),
    sa.Column('to_email', sa.String(length=320), nullable=True),
    sa.Column('language', sa.String(length=2), nullable=False),
    sa.Column('notice_version', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.Column('last_sent_at', UTCDateTime(), nullable=False),
    sa.Column('answered_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint("status in ('pending', 'answered', 'expired')", name=op.f('ck_guardian_requests_status')),
    sa.ForeignKeyConstraint(['child_id'], ['patrons.id'], name=op.f('fk_guardian_requests_child_id_patrons'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['guardian_link_id'], ['guardian_links.id'], name=op.f('fk_guardian_requests_guardian_link_id_guardian_links'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_guardian_requests')),
    sa.UniqueConstraint('public_id', name=op.f('uq_guardian_requests_public_id'))
    )
    with op.batch_alter_table('guardian_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_guardian_requests_child_id'), ['child_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_guardian_requests_guardian_link_id'), ['guardian_link_id'], unique=False)
        batch_op.create_index('ix_guardian_requests_status_expires_at', ['status', 'expires_at'], unique=False)

    op.create_table('patron_decisions',
    sa.Column('patron_id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=40), nullable=False),
    sa.Column('topic', sa.String(length=64), nullable=False),
    sa.Column('decision', sa.String(length=8), nullable=False),
    sa.Column('actor', sa.String(length=16), nullable=False),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['consent_events.id'], name=op.f('fk_patron_decisions_event_id_consent_events')),
    sa.ForeignKeyConstraint(['patron_id'], ['patrons.id'], name=op.f('fk_patron_decisions_patron_id_patrons')),
    sa.PrimaryKeyConstraint('patron_id', 'purpose', 'topic', name=op.f('pk_patron_decisions'))
    )
    op.create_table('unsubscribe_feedback',
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('reason_code', sa.String(length=32), nullable=False),
    sa.Column('text', sa.String(length=500), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint("reason_code in ('too_many', 'not_relevant', 'never_signed_up', 'other')", name=op.f('ck_unsubscribe_feedback_reason_code')),
    sa.ForeignKeyConstraint(['event_id'], ['consent_events.id'], name=op.f('fk_unsubscribe_feedback_event_id_consent_events')),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_unsubscribe_feedback'))
    )


def downgrade():
    op.drop_table('unsubscribe_feedback')
    op.drop_table('patron_decisions')
    with op.batch_alter_table('guardian_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_guardian_requests_status_expires_at')
        batch_op.drop_index(batch_op.f('ix_guardian_requests_guardian_link_id'))
        batch_op.drop_index(batch_op.f('ix_guardian_requests_child_id'))

    op.drop_table('guardian_requests')
    with op.batch_alter_table('family_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_family_requests_status'))
        batch_op.drop_index(batch_op.f('ix_family_requests_guardian_link_id'))
        batch_op.drop_index(batch_op.f('ix_family_requests_child_id'))

    op.drop_table('family_requests')
    op.drop_table('address_suppressions')
    op.drop_table('address_decisions')
    with op.batch_alter_table('sendgrid_event_receipts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sendgrid_event_receipts_batch_id'))

    op.drop_table('sendgrid_event_receipts')
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_messages_status_available')

    op.drop_table('outbox_messages')
    with op.batch_alter_table('guardian_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_guardian_links_guardian_id'))
        batch_op.drop_index(batch_op.f('ix_guardian_links_child_id'))

    op.drop_table('guardian_links')
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_events_patron_purpose')
        batch_op.drop_index('ix_consent_events_address_purpose')

    op.drop_table('consent_events')
    with op.batch_alter_table('webhook_batches', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_batches_status_available')

    op.drop_table('webhook_batches')
    op.drop_table('undeliverable_addresses')
    op.drop_table('topics')
    with op.batch_alter_table('suppression_sync_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_suppression_sync_jobs_status_available')
        batch_op.drop_index(batch_op.f('ix_suppression_sync_jobs_address_key'))

    op.drop_table('suppression_sync_jobs')
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_policy_versions_effective_at'))

    op.drop_table('policy_versions')
    with op.batch_alter_table('patrons', schema=None) as batch_op:
        batch_op.drop_index('ix_patrons_address_key_id')

    op.drop_table('patrons')
    op.drop_table('export_manifests')

"""ledger chain, erasure and retention

The tamper-evident ledger: every consent event gets its chain (its patron's, else its address's),
its place in it, the previous event's hash and its own, and a salt and digest per personal evidence
value (domain/ledger_chain.py); `ledger_chain_heads` keeps each chain's length and last hash.
Existing events are chained here in id order, their personal evidence sealed under fresh salts.
Patrons get `erased_at` (a tombstone), and `erasure_requests` holds erasure requests and who
carried each erasure out.

Revision ID: b7c1e9a2d4f6
Revises: 2df1696d3439
Created: 2026-12-03 08:10:00.000000
"""
from alembic import op
import sqlalchemy as sa
from consent_service.domain.ledger_chain import ChainedEvent, Head, link_events, seal_evidence
from consent_service.models import UTCDateTime

revision = 'b7c1e9a2d4f6'
down_revision = '2df1696d3439'
branch_labels = None
depends_on = None

BATCH = 1000
CHAIN_COLUMNS = ('chain_key', 'chain_seq', 'prev_hash', 'hash', 'evidence_salts', 'evidence_digests')

events = sa.table(
    'consent_events',
    sa.column('id', sa.BigInteger()), sa.column('patron_id', sa.Integer()),
    sa.column('address_key', sa.String()), sa.column('purpose', sa.String()),
    sa.column('topic', sa.String()), sa.column('decision', sa.String()),
    sa.column('source', sa.String()), sa.column('actor', sa.String()),
    sa.column('actor_ref', sa.String()), sa.column('policy_version_id', sa.Integer()),
    sa.column('occurred_at', UTCDateTime()), sa.column('recorded_at', UTCDateTime()),
    sa.column('effective', sa.Boolean()), sa.column('evidence', sa.JSON()),
    sa.column('sg_event_id', sa.String()), sa.column('chain_key', sa.String()),
    sa.column('chain_seq', sa.Integer()), sa.column('prev_hash', sa.String()),
    sa.column('hash', sa.String()), sa.column('evidence_salts', sa.JSON()),
    sa.column('evidence_digests', sa.JSON()),
)
heads_table = sa.table('ledger_chain_heads', sa.column('chain_key', sa.String()),
                       sa.column('length', sa.Integer()), sa.column('last_hash', sa.String()))


def upgrade():
    op.create_table('ledger_chain_heads',
    sa.Column('chain_key', sa.String(length=80), nullable=False),
    sa.Column('length', sa.Integer(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('chain_key', name=op.f('pk_ledger_chain_heads'))
    )
    op.create_table('erasure_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patron_id', sa.Integer(), nullable=False),
    sa.Column('requested_by', sa.String(length=16), nullable=False),
    sa.Column('guardian_link_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('done_at', UTCDateTime(), nullable=True),
    sa.Column('done_by', sa.String(length=200), nullable=True),
    sa.CheckConstraint("requested_by in ('patron', 'guardian', 'staff', 'api', 'cli', 'retention')", name=op.f('ck_erasure_requests_requested_by')),
    sa.CheckConstraint("status in ('open', 'done')", name=op.f('ck_erasure_requests_status')),
    sa.ForeignKeyConstraint(['guardian_link_id'], ['guardian_links.id'], name=op.f('fk_erasure_requests_guardian_link_id_guardian_links'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['patron_id'], ['patrons.id'], name=op.f('fk_erasure_requests_patron_id_patrons')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_erasure_requests'))
    )
    with op.batch_alter_table('erasure_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_erasure_requests_patron_id'), ['patron_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_erasure_requests_status'), ['status'], unique=False)

    op.add_column('patrons', sa.Column('erased_at', UTCDateTime(), nullable=True))
    postgresql = op.get_bind().dialect.name == 'postgresql'
    # SQLite adds NOT NULL columns in place when they have a default (no table rebuild, which
    # would reflect the patrons table and its expression indexes); PostgreSQL adds them nullable
    # and sets NOT NULL once the existing events are chained.
    defaults = {'chain_key': "''", 'chain_seq': '0', 'prev_hash': "''", 'hash': "''",
                'evidence_salts': "'{}'", 'evidence_digests': "'{}'"}
    types = {'chain_key': sa.String(length=80), 'chain_seq': sa.Integer(),
             'prev_hash': sa.String(length=64), 'hash': sa.String(length=64),
             'evidence_salts': sa.JSON(), 'evidence_digests': sa.JSON()}
    for name in CHAIN_COLUMNS:
        if postgresql:
            op.add_column('consent_events', sa.Column(name, types[name], nullable=True))
        else:
            op.add_column('consent_events', sa.Column(name, types[name], nullable=False,
                                                      server_default=sa.text(defaults[name])))
    _chain_existing_events(op.get_bind())
    if postgresql:
        for name in CHAIN_COLUMNS:
            op.alter_column('consent_events', name, nullable=False)
    op.create_index('ix_consent_events_chain_key_chain_seq', 'consent_events',
                    ['chain_key', 'chain_seq'], unique=True)


def _chain_existing_events(bind):
    """Chain the events already recorded, in id order (their insertion order), in batches."""
    heads: dict[str, Head] = {}
    last_id = 0
    while True:
        rows = bind.execute(sa.select(events).where(events.c.id > last_id)
                            .order_by(events.c.id).limit(BATCH)).mappings().all()
        if not rows:
            break
        updates = []
        for row in rows:
            sealed = seal_evidence(row['evidence'] or {})
            content = ChainedEvent(
                patron_id=row['patron_id'], address_key=row['address_key'], purpose=row['purpose'],
                topic=row['topic'], decision=row['decision'], source=row['source'],
                actor=row['actor'], actor_ref=row['actor_ref'],
                policy_version_id=row['policy_version_id'], occurred_at=row['occurred_at'],
                recorded_at=row['recorded_at'], effective=row['effective'],
                sg_event_id=row['sg_event_id'], evidence=sealed)
            links, touched = link_events(heads, [content])
            heads.update(touched)
            link = links[0]
            updates.append({'event_id': row['id'], 'evidence': sealed.values,
                            'chain_key': link.chain, 'chain_seq': link.seq,
                            'prev_hash': link.prev_hash, 'hash': link.hash,
                            'evidence_salts': sealed.salts, 'evidence_digests': sealed.digests})
        bind.execute(events.update().where(events.c.id == sa.bindparam('event_id')).values(
            {name: sa.bindparam(name) for name in ('evidence', *CHAIN_COLUMNS)}), updates)
        last_id = rows[-1]['id']
    if heads:
        bind.execute(heads_table.insert(), [
            {'chain_key': key, 'length': head.length, 'last_hash': head.last_hash}
            for key, head in heads.items()])


def downgrade():
    op.drop_index('ix_consent_events_chain_key_chain_seq', table_name='consent_events')
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        for name in reversed(CHAIN_COLUMNS):
            batch_op.drop_column(name)
    with op.batch_alter_table('patrons', schema=None) as batch_op:
        batch_op.drop_column('erased_at')
    with op.batch_alter_table('erasure_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_erasure_requests_status'))
        batch_op.drop_index(batch_op.f('ix_erasure_requests_patron_id'))
    op.drop_table('erasure_requests')
    op.drop_table('ledger_chain_heads')

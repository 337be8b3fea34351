"""intake initial: event store, hash chain head, outbox, ledger, regions

Revision ID: 0001_intake
Revises: 
Create Date: 2026-11-21 19:35:03.473904
"""
from collections.abc import Sequence

import sqlalchemy as sa

import services.kit.db
from alembic import op

revision: str = '0001_intake'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ('intake',)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('chain_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.Column('chain_hash', sa.String(length=64), nullable=False),
    sa.Column('recorded_at', services.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chain_head'))
    )
    op.create_table('event',
    sa.Column('sequence', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('schema_version', sa.Integer(), nullable=False),
    sa.Column('occurred_at', services.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', services.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('prefecture_code', sa.String(length=6), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('chain_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('sequence', name=op.f('pk_event')),
    sa.UniqueConstraint('event_id', name=op.f('uq_event_event_id'))
    )
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index('ix_event_prefecture_code_sequence', ['prefecture_code', 'sequence'], unique=False)
        batch_op.create_index('ix_event_recorded_at', ['recorded_at'], unique=False)
        batch_op.create_index('ix_event_region_code_sequence', ['region_code', 'sequence'], unique=False)
        batch_op.create_index('ix_event_type_sequence', ['type', 'sequence'], unique=False)

    op.create_table('finding',
    sa.Column('finding_id', sa.String(length=64), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('prefecture_code', sa.String(length=6), nullable=False),
    sa.Column('inspection_id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=32), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('indicator', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('village_id', sa.String(length=64), nullable=True),
    sa.Column('household_id', sa.String(length=64), nullable=True),
    sa.Column('responsible_unit', sa.String(length=200), nullable=False),
    sa.Column('responsible_person', sa.String(length=200), nullable=False),
    sa.Column('deadline', sa.Date(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('found_at', services.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('state_changed_at', services.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', services.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reports', sa.Integer(), nullable=False),
    sa.Column('rejections', sa.Integer(), nullable=False),
    sa.Column('dispute_decided', sa.Boolean(), nullable=False),
    sa.Column('last_sequence', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('finding_id', name=op.f('pk_finding'))
    )
    with op.batch_alter_table('finding', schema=None) as batch_op:
        batch_op.create_index('ix_finding_deadline', ['deadline'], unique=False)
        batch_op.create_index('ix_finding_prefecture_code_state', ['prefecture_code', 'state'], unique=False)
        batch_op.create_index('ix_finding_region_code_state', ['region_code', 'state'], unique=False)

    op.create_table('finding_transition',
    sa.Column('sequence', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('finding_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('occurred_at', services.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sequence', 'finding_id', name=op.f('pk_finding_transition'))
    )
    with op.batch_alter_table('finding_transition', schema=None) as batch_op:
        batch_op.create_index('ix_finding_transition_finding_id', ['finding_id'], unique=False)

    op.create_table('household_risk',
    sa.Column('household_id', sa.String(length=64), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('flagged', sa.Boolean(), nullable=False),
    sa.Column('last_sequence', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('household_id', name=op.f('pk_household_risk'))
    )
    op.create_table('natural_key',
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'key', name=op.f('pk_natural_key'))
    )
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('topic', sa.String(length=200), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.Column('headers', sa.Text(), nullable=False),
    sa.Column('created_at', services.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', services.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_unsent', ['id'], unique=False, sqlite_where=sa.text('sent_at IS NULL'), postgresql_where=sa.text('sent_at IS NULL'))

    op.create_table('region',
    sa.Column('code', sa.String(length=6), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('parent_code', sa.String(length=6), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('exit_year', sa.Integer(), nullable=True),
    sa.Column('poverty_county', sa.Boolean(), nullable=True),
    sa.Column('status_basis', sa.String(length=16), nullable=True),
    sa.Column('status_sequence', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_region'))
    )
    with op.batch_alter_table('region', schema=None) as batch_op:
        batch_op.create_index('ix_region_parent_code', ['parent_code'], unique=False)

    # the chain starts at sequence 0 with the genesis hash; its row is the append lock
    op.execute("INSERT INTO chain_head (id, sequence, chain_hash) VALUES (1, 0, '" + "0" * 64 + "')")



def downgrade() -> None:
    with op.batch_alter_table('region', schema=None) as batch_op:
        batch_op.drop_index('ix_region_parent_code')

    op.drop_table('region')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_unsent', sqlite_where=sa.text('sent_at IS NULL'), postgresql_where=sa.text('sent_at IS NULL'))

    op.drop_table('outbox')
    op.drop_table('natural_key')
    op.drop_table('household_risk')
    with op.batch_alter_table('finding_transition', schema=None) as batch_op:
        batch_op.drop_index('ix_finding_transition_finding_id')

    op.drop_table('finding_transition')
    with op.batch_alter_table('finding', schema=None) as batch_op:
        batch_op.drop_index('ix_finding_region_code_state')
        batch_op.drop_index('ix_finding_prefecture_code_state')
        batch_op.drop_index('ix_finding_deadline')

    op.drop_table('finding')
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('ix_event_type_sequence')
        batch_op.drop_index('ix_event_region_code_sequence')
        batch_op.drop_index('ix_event_recorded_at')
        batch_op.drop_index('ix_event_prefecture_code_sequence')

    op.drop_table('event')
    op.drop_table('chain_head')

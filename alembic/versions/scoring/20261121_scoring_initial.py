"""scoring initial: applied events, offsets, clock, counties, scores, explanations, team points, outbox

Revision ID: 0001_scoring
Revises: 
Create Date: 2026-11-21 20:32:37.865286
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.kit.db

revision: str = '0001_scoring'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ('scoring',)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('applied_event',
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('record', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_applied_event'))
    )
    with op.batch_alter_table('applied_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_applied_event_sequence'), ['sequence'], unique=False)

    op.create_table('consumer_offset',
    sa.Column('topic', sa.String(length=200), nullable=False),
    sa.Column('partition', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('next_offset', sa.BigInteger(), nullable=False),
    sa.Column('last_event_id', sa.String(length=36), nullable=True),
    sa.PrimaryKeyConstraint('topic', 'partition', name=op.f('pk_consumer_offset'))
    )
    op.create_table('county',
    sa.Column('code', sa.String(length=6), nullable=False),
    sa.Column('prefecture_code', sa.String(length=6), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_county'))
    )
    with op.batch_alter_table('county', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_county_prefecture_code'), ['prefecture_code'], unique=False)

    op.create_table('explanation',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('component', sa.String(length=32), nullable=False),
    sa.Column('points', sa.Float(), nullable=False),
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('cause', sa.String(length=64), nullable=False),
    sa.Column('policy_id', sa.String(length=64), nullable=False),
    sa.Column('at', services.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_explanation'))
    )
    with op.batch_alter_table('explanation', schema=None) as batch_op:
        batch_op.create_index('ix_explanation_region_code_year_id', ['region_code', 'year', 'id'], unique=False)

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

    op.create_table('score',
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('year', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('parent_code', sa.String(length=6), nullable=False),
    sa.Column('league', sa.String(length=16), nullable=True),
    sa.Column('total', sa.Float(), nullable=False),
    sa.Column('grade', sa.String(length=32), nullable=False),
    sa.Column('gated', sa.Boolean(), nullable=False),
    sa.Column('components', sa.Text(), nullable=False),
    sa.Column('policy_id', sa.String(length=64), nullable=False),
    sa.Column('cause', sa.String(length=64), nullable=False),
    sa.Column('as_of', services.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('region_code', 'year', name=op.f('pk_score'))
    )
    with op.batch_alter_table('score', schema=None) as batch_op:
        batch_op.create_index('ix_score_parent_code_year', ['parent_code', 'year'], unique=False)

    op.create_table('team_points',
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('as_of', services.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('team_id', name=op.f('pk_team_points'))
    )
    op.create_table('worker_clock',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('as_of', services.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('policy_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_worker_clock'))
    )


def downgrade() -> None:
    op.drop_table('worker_clock')
    op.drop_table('team_points')
    with op.batch_alter_table('score', schema=None) as batch_op:
        batch_op.drop_index('ix_score_parent_code_year')

    op.drop_table('score')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_unsent', sqlite_where=sa.text('sent_at IS NULL'), postgresql_where=sa.text('sent_at IS NULL'))

    op.drop_table('outbox')
    with op.batch_alter_table('explanation', schema=None) as batch_op:
        batch_op.drop_index('ix_explanation_region_code_year_id')

    op.drop_table('explanation')
    with op.batch_alter_table('county', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_county_prefecture_code'))

    op.drop_table('county')
    op.drop_table('consumer_offset')
    with op.batch_alter_table('applied_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_applied_event_sequence'))

    op.drop_table('applied_event')

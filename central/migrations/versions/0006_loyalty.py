"""loyalty: versioned rules, loyalty cards, points lots, receipts, tier history, segments, vouchers, rewards

Revision ID: 0006_loyalty
Revises: 0005_customers
Create Date: 2026-12-04 16:45:09.306792
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006_loyalty'
down_revision = '0005_customers'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('loyalty_rules',
    sa.Column('version', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('retired', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_loyalty_rules')),
    sa.UniqueConstraint('kind', 'code', 'revision', name='uq_loyalty_rules_kind_code_revision')
    )
    op.create_table('points_lots',
    sa.Column('id', sa.String(length=48), nullable=False),
    sa.Column('card_id', sa.BigInteger(), nullable=False),
    sa.Column('operation_id', sa.Uuid(), nullable=False),
    sa.Column('receipt_id', sa.Uuid(), nullable=True),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('earned', sa.BigInteger(), nullable=False),
    sa.Column('earned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('available_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('points > 0 AND points <= earned', name=op.f('ck_points_lots_points_left')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_lots'))
    )
    with op.batch_alter_table('points_lots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_points_lots_card_id'), ['card_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_points_lots_expires_at'), ['expires_at'], unique=False)

    op.create_table('receipts',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('card_id', sa.BigInteger(), nullable=False),
    sa.Column('customer_id', sa.BigInteger(), nullable=True),
    sa.Column('store_id', sa.BigInteger(), nullable=True),
    sa.Column('terminal_id', sa.BigInteger(), nullable=True),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('original_id', sa.Uuid(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('local_date', sa.Date(), nullable=False),
    sa.Column('utc_offset', sa.SmallInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('lines', sa.JSON(), nullable=False),
    sa.Column('items', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('item_groups', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('awards', sa.JSON(), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_receipts'))
    )
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.create_index('ix_receipts_card_at', ['card_id', 'at'], unique=False)
        batch_op.create_index('ix_receipts_local_date', ['local_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_receipts_original_id'), ['original_id'], unique=False)

    op.create_table('rewards',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('stock', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_rewards'))
    )
    op.create_table('segment_changes',
    sa.Column('version', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('segment', sa.String(length=32), nullable=False),
    sa.Column('card_id', sa.BigInteger(), nullable=False),
    sa.Column('number', sa.String(length=19), nullable=False),
    sa.Column('member', sa.Boolean(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_segment_changes'))
    )
    op.create_table('segment_members',
    sa.Column('segment', sa.String(length=32), nullable=False),
    sa.Column('card_id', sa.BigInteger(), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('segment', 'card_id', name=op.f('pk_segment_members'))
    )
    with op.batch_alter_table('segment_members', schema=None) as batch_op:
        batch_op.create_index('ix_segment_members_card', ['card_id'], unique=False)

    op.create_table('segment_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('segment', sa.String(length=32), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('trigger', sa.String(length=8), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('members', sa.BigInteger(), nullable=True),
    sa.Column('added', sa.BigInteger(), nullable=True),
    sa.Column('removed', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segment_runs'))
    )
    with op.batch_alter_table('segment_runs', schema=None) as batch_op:
        batch_op.create_index('ix_segment_runs_segment', ['segment', 'id'], unique=False)

    op.create_table('tier_changes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('card_id', sa.BigInteger(), nullable=False),
    sa.Column('from_tier', sa.String(length=32), nullable=True),
    sa.Column('to_tier', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=24), nullable=False),
    sa.Column('qualifying', sa.BigInteger(), nullable=False),
    sa.Column('review', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tier_changes')),
    sa.UniqueConstraint('card_id', 'at', 'to_tier', name='uq_tier_changes_card_at_tier')
    )
    with op.batch_alter_table('tier_changes', schema=None) as batch_op:
        batch_op.create_index('ix_tier_changes_card', ['card_id', 'id'], unique=False)

    op.create_table('vouchers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('hint', sa.String(length=8), nullable=False),
    sa.Column('request_id', sa.Uuid(), nullable=True),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('max_uses', sa.Integer(), nullable=False),
    sa.Column('uses', sa.Integer(), server_default='0', nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=True),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('min_basket', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('card_id', sa.BigInteger(), nullable=True),
    sa.Column('customer_id', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('issued_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vouchers')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_vouchers_code_hash')),
    sa.UniqueConstraint('request_id', name=op.f('uq_vouchers_request_id'))
    )
    with op.batch_alter_table('vouchers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vouchers_card_id'), ['card_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_vouchers_customer_id'), ['customer_id'], unique=False)

    op.create_table('loyalty_cards',
    sa.Column('card_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tier', sa.String(length=32), nullable=True),
    sa.Column('tier_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('discount_bps', sa.Integer(), server_default='0', nullable=False),
    sa.Column('points_debt', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('master_card_id', sa.BigInteger(), nullable=True),
    sa.Column('first_purchase_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('points_debt >= 0', name=op.f('ck_loyalty_cards_debt_not_negative')),
    sa.ForeignKeyConstraint(['card_id'], ['cards.id'], name=op.f('fk_loyalty_cards_card_id_cards')),
    sa.PrimaryKeyConstraint('card_id', name=op.f('pk_loyalty_cards'))
    )
    with op.batch_alter_table('loyalty_cards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loyalty_cards_master_card_id'), ['master_card_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('loyalty_cards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loyalty_cards_master_card_id'))

    op.drop_table('loyalty_cards')
    with op.batch_alter_table('vouchers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vouchers_customer_id'))
        batch_op.drop_index(batch_op.f('ix_vouchers_card_id'))

    op.drop_table('vouchers')
    with op.batch_alter_table('tier_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_tier_changes_card')

    op.drop_table('tier_changes')
    with op.batch_alter_table('segment_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_segment_runs_segment')

    op.drop_table('segment_runs')
    with op.batch_alter_table('segment_members', schema=None) as batch_op:
        batch_op.drop_index('ix_segment_members_card')

    op.drop_table('segment_members')
    op.drop_table('segment_changes')
    op.drop_table('rewards')
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_receipts_original_id'))
        batch_op.drop_index('ix_receipts_local_date')
        batch_op.drop_index('ix_receipts_card_at')

    op.drop_table('receipts')
    with op.batch_alter_table('points_lots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_points_lots_expires_at'))
        batch_op.drop_index(batch_op.f('ix_points_lots_card_id'))

    op.drop_table('points_lots')
    op.drop_table('loyalty_rules')

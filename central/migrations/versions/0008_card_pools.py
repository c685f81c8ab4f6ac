"""card pools: the master card whose e-money a card spends and loads (replacing loyalty_cards.master_card_id)

Revision ID: 0008_card_pools
Revises: 0007_voucher_feed
Create Date: 2026-12-04 17:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_card_pools'
down_revision = '0007_voucher_feed'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pool_id', sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f('ix_cards_pool_id'), ['pool_id'], unique=False)
    with op.batch_alter_table('loyalty_cards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loyalty_cards_master_card_id'))
        batch_op.drop_column('master_card_id')


def downgrade() -> None:
    with op.batch_alter_table('loyalty_cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('master_card_id', sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f('ix_loyalty_cards_master_card_id'), ['master_card_id'], unique=False)
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cards_pool_id'))
        batch_op.drop_column('pool_id')

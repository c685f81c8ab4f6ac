"""loyalty card feed: loyalty_cards by the time they last changed, which stores follow

Revision ID: 0010_loyalty_card_feed
Revises: 0009_store_groups
Create Date: 2026-12-04 18:00:00
"""
from alembic import op

revision = '0010_loyalty_card_feed'
down_revision = '0009_store_groups'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('loyalty_cards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loyalty_cards_updated_at'), ['updated_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('loyalty_cards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loyalty_cards_updated_at'))

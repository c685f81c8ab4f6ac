"""loyalty cursor: how far the store has followed its loyalty cards' changes (tier, discount level, debt)

Revision ID: 0008_loyalty_cursor
Revises: 0007_groups
Create Date: 2026-12-04 18:05:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_loyalty_cursor'
down_revision = '0007_groups'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('loyalty_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('loyalty_id', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.drop_column('loyalty_id')
        batch_op.drop_column('loyalty_at')

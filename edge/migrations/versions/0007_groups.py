"""groups: the store's groups and each loyalty card's customer groups, which earning schemes may name

Revision ID: 0007_groups
Revises: 0006_outbox_debits
Create Date: 2026-12-04 17:55:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007_groups'
down_revision = '0006_outbox_debits'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('store_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('groups', sa.JSON(), server_default='[]', nullable=False))
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('customer_groups', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_column('customer_groups')
    with op.batch_alter_table('store_settings', schema=None) as batch_op:
        batch_op.drop_column('groups')

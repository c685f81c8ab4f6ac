"""rules cursor: how far the store has pulled the loyalty rules feed (central moves it past settled rows only)

Revision ID: 0005_rules_cursor
Revises: 0004_vouchers
Create Date: 2026-12-04 17:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005_rules_cursor'
down_revision = '0004_vouchers'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rules_version', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.drop_column('rules_version')

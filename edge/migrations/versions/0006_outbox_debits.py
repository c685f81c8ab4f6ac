"""outbox debits: a partial index the offline exposure is summed from

Revision ID: 0006_outbox_debits
Revises: 0005_rules_cursor
Create Date: 2026-12-04 17:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_outbox_debits'
down_revision = '0005_rules_cursor'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_debit_amount', ['amount'], unique=False, sqlite_where=sa.text('debit = 1'))


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_debit_amount')

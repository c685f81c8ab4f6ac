"""card pins: programmes that need a PIN, and each card's PIN hash and wrong-PIN count

Revision ID: 0004_card_pins
Revises: 0003_catalogue
Create Date: 2026-12-06 12:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_card_pins'
down_revision = '0003_catalogue'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('programmes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pin_required', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pin_hash', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('pin_failures', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_column('pin_failures')
        batch_op.drop_column('pin_hash')

    with op.batch_alter_table('programmes', schema=None) as batch_op:
        batch_op.drop_column('pin_required')

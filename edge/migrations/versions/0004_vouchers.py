"""vouchers: those a store may take offline, and the voucher feed's cursor

Revision ID: 0004_vouchers
Revises: 0003_loyalty
Create Date: 2026-12-04 17:25:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_vouchers'
down_revision = '0003_loyalty'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('vouchers',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('lookup_hash', sa.String(length=64), nullable=False),
    sa.Column('hint', sa.String(length=8), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=True),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('min_basket', sa.BigInteger(), nullable=False),
    sa.Column('card_number', sa.String(length=19), nullable=True),
    sa.Column('used', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('lookup_hash')
    )
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('voucher_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('voucher_id', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.drop_column('voucher_id')
        batch_op.drop_column('voucher_at')
    op.drop_table('vouchers')

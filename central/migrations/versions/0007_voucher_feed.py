"""voucher feed: an unkeyed lookup hash stores find typed codes by, and when each voucher last changed

Revision ID: 0007_voucher_feed
Revises: 0006_loyalty
Create Date: 2026-12-04 17:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007_voucher_feed'
down_revision = '0006_loyalty'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vouchers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lookup_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                                      nullable=False))
        batch_op.create_unique_constraint(batch_op.f('uq_vouchers_lookup_hash'), ['lookup_hash'])
        batch_op.create_index(batch_op.f('ix_vouchers_updated_at'), ['updated_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('vouchers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vouchers_updated_at'))
        batch_op.drop_constraint(batch_op.f('uq_vouchers_lookup_hash'), type_='unique')
        batch_op.drop_column('updated_at')
        batch_op.drop_column('lookup_hash')

"""catalogue: the products central ships

Revision ID: 0002_catalogue
Revises: 0001
Create Date: 2026-12-06 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002_catalogue'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('products',
    sa.Column('key', sa.String(length=48), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('price', sa.BigInteger(), nullable=False),
    sa.Column('member_price', sa.BigInteger(), nullable=True),
    sa.Column('unit', sa.String(length=16), nullable=False),
    sa.Column('item_group', sa.String(length=32), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.create_index('ix_products_version', ['version'], unique=False)


def downgrade() -> None:
    op.drop_table('products')

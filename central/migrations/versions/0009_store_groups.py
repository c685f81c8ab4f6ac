"""store groups: the groups each store is in, which earning schemes may name

Revision ID: 0009_store_groups
Revises: 0008_card_pools
Create Date: 2026-12-04 17:50:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009_store_groups'
down_revision = '0008_card_pools'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('store_groups',
    sa.Column('store_id', Id, nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_store_groups_store_id_stores')),
    sa.PrimaryKeyConstraint('store_id', 'code', name=op.f('pk_store_groups'))
    )
    with op.batch_alter_table('store_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_store_groups_code'), ['code'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('store_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_store_groups_code'))
    op.drop_table('store_groups')

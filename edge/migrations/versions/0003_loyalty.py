"""loyalty: rules and segment membership central ships; points, tier and discount level of cached cards

Revision ID: 0003_loyalty
Revises: 0002_catalogue
Create Date: 2026-12-04 17:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003_loyalty'
down_revision = '0002_catalogue'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('loyalty_rules',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('retired', sa.Boolean(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_table('segment_members',
    sa.Column('number', sa.String(length=19), nullable=False),
    sa.Column('segment', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('number', 'segment')
    )
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('points', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('tier', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('discount_bps', sa.Integer(), nullable=True))
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('segment_version', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.drop_column('segment_version')
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_column('discount_bps')
        batch_op.drop_column('tier')
        batch_op.drop_column('points')
    op.drop_table('segment_members')
    op.drop_table('loyalty_rules')

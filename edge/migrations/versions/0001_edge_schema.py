"""edge schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 12:16:57.825397
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('cards',
    sa.Column('number', sa.String(length=19), nullable=False),
    sa.Column('programme', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('balance', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('held', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('expires_on', sa.Date(), nullable=True),
    sa.Column('pack_sellable', sa.Boolean(), server_default=sa.text('0'), nullable=False),
    sa.Column('offline_amount', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('offline_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_online_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('watch', sa.Boolean(), server_default=sa.text('0'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('number')
    )
    op.create_table('deny_list',
    sa.Column('number', sa.String(length=19), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('number')
    )
    op.create_table('holds',
    sa.Column('txn_id', sa.String(length=36), nullable=False),
    sa.Column('card', sa.String(length=19), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_by', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('txn_id')
    )
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.create_index('ix_holds_status', ['status', 'expires_at'], unique=False)

    op.create_table('journal',
    sa.Column('txn_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('card', sa.String(length=19), nullable=True),
    sa.Column('amount', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('original_txn_id', sa.String(length=36), nullable=True),
    sa.Column('decision', sa.String(length=8), nullable=False),
    sa.Column('approved', sa.Boolean(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('till', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('txn_id')
    )
    with op.batch_alter_table('journal', schema=None) as batch_op:
        batch_op.create_index('ix_journal_card', ['card'], unique=False)
        batch_op.create_index('ix_journal_original', ['original_txn_id'], unique=False)

    op.create_table('number_blocks',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('programme', sa.String(length=32), nullable=False),
    sa.Column('first_serial', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('used', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('outbox',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('txn_id', sa.String(length=36), nullable=False),
    sa.Column('card', sa.String(length=19), nullable=False),
    sa.Column('delta', sa.BigInteger(), nullable=False),
    sa.Column('debit', sa.Boolean(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('entry', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('txn_id')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_card', ['card'], unique=False)

    op.create_table('programmes',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('code')
    )
    op.create_table('store_settings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('exposure_budget', sa.BigInteger(), nullable=False),
    sa.Column('budget_currency', sa.String(length=3), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('sync_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_seq', sa.Integer(), server_default='1', nullable=False),
    sa.Column('acked_seq', sa.Integer(), server_default='0', nullable=False),
    sa.Column('deny_version', sa.Integer(), server_default='0', nullable=False),
    sa.Column('card_feed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('watch_feed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('config_version', sa.Integer(), server_default='0', nullable=False),
    sa.Column('clock_offset', sa.Float(), server_default='0', nullable=False),
    sa.Column('quarantined', sa.Boolean(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_push_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_pull_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('tills',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('code'),
    sa.UniqueConstraint('token_hash')
    )
    # The one row of the store's sync position.
    op.execute("INSERT INTO sync_state (id) VALUES (1)")


def downgrade() -> None:

    op.drop_table('tills')
    op.drop_table('sync_state')
    op.drop_table('store_settings')
    op.drop_table('programmes')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_card')

    op.drop_table('outbox')
    op.drop_table('number_blocks')
    with op.batch_alter_table('journal', schema=None) as batch_op:
        batch_op.drop_index('ix_journal_original')
        batch_op.drop_index('ix_journal_card')

    op.drop_table('journal')
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.drop_index('ix_holds_status')

    op.drop_table('holds')
    op.drop_table('deny_list')
    op.drop_table('cards')


"""store sync: offline limits, store sync state, store entries, quarantine, nonces, deny list,
exceptions, number blocks and watch lists

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('programmes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('floor_limit', sa.BigInteger(), server_default='5000', nullable=False))
        batch_op.add_column(sa.Column('card_offline_amount', sa.BigInteger(), server_default='10000', nullable=False))
        batch_op.add_column(sa.Column('card_offline_count', sa.Integer(), server_default='3', nullable=False))

    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sync_secret_version', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('epoch', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('acked_seq', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('config_version', sa.BigInteger(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('offline_budget', sa.BigInteger(), server_default='100000', nullable=False))
        batch_op.add_column(sa.Column('offline_budget_currency', sa.String(length=3), server_default='EUR',
                                      nullable=False))
        batch_op.add_column(sa.Column('last_contact_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reported_backlog', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('reported_exposure', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('quarantined_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('quarantine_reason', sa.Text(), nullable=True))

    op.create_table('store_entries',
    sa.Column('store_id', Id, nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('txn_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('flags', sa.JSON(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_store_entries_store_id_stores')),
    sa.PrimaryKeyConstraint('store_id', 'epoch', 'seq', name=op.f('pk_store_entries'))
    )
    with op.batch_alter_table('store_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_store_entries_txn_id'), ['txn_id'], unique=False)
        batch_op.create_index('ix_store_entries_held', ['store_id', 'status'], unique=False)

    op.create_table('sync_quarantine',
    sa.Column('id', Id, autoincrement=True, nullable=False),
    sa.Column('store_id', Id, nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('body_sha256', sa.String(length=64), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_sync_quarantine_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_quarantine')),
    sa.UniqueConstraint('store_id', 'body_sha256', name='uq_sync_quarantine_store_body')
    )

    op.create_table('sync_nonces',
    sa.Column('store_id', Id, nullable=False),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_sync_nonces_store_id_stores')),
    sa.PrimaryKeyConstraint('store_id', 'nonce', name=op.f('pk_sync_nonces'))
    )
    with op.batch_alter_table('sync_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sync_nonces_seen_at'), ['seen_at'], unique=False)

    op.create_table('deny_list',
    sa.Column('card_id', sa.BigInteger(), nullable=False),
    sa.Column('number', sa.String(length=19), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('listed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('card_id', name=op.f('pk_deny_list'))
    )

    op.create_table('deny_changes',
    sa.Column('version', Id, autoincrement=True, nullable=False),
    sa.Column('card_id', sa.BigInteger(), nullable=False),
    sa.Column('number', sa.String(length=19), nullable=False),
    sa.Column('listed', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_deny_changes'))
    )

    op.create_table('sync_exceptions',
    sa.Column('id', Id, autoincrement=True, nullable=False),
    sa.Column('store_id', Id, nullable=False),
    sa.Column('card_id', sa.BigInteger(), nullable=True),
    sa.Column('txn_id', sa.Uuid(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_sync_exceptions_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_exceptions'))
    )
    with op.batch_alter_table('sync_exceptions', schema=None) as batch_op:
        batch_op.create_index('ix_sync_exceptions_status', ['status', 'id'], unique=False)

    op.create_table('number_blocks',
    sa.Column('id', Id, autoincrement=True, nullable=False),
    sa.Column('programme_id', Id, nullable=False),
    sa.Column('store_id', Id, nullable=False),
    sa.Column('first_serial', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('granted_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['programme_id'], ['programmes.id'], name=op.f('fk_number_blocks_programme_id_programmes')),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_number_blocks_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_number_blocks'))
    )
    with op.batch_alter_table('number_blocks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_number_blocks_store_id'), ['store_id'], unique=False)

    op.create_table('store_cards',
    sa.Column('id', Id, autoincrement=True, nullable=False),
    sa.Column('store_id', Id, nullable=False),
    sa.Column('card_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_store_cards_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_store_cards')),
    sa.UniqueConstraint('store_id', 'card_id', name='uq_store_cards_store_card')
    )
    with op.batch_alter_table('store_cards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_store_cards_card_id'), ['card_id'], unique=False)


def downgrade() -> None:
    for table in ('store_cards', 'number_blocks', 'sync_exceptions', 'deny_changes', 'deny_list', 'sync_nonces',
                  'sync_quarantine', 'store_entries'):
        op.drop_table(table)
    with op.batch_alter_table('stores', schema=None) as batch_op:
        for column in ('quarantine_reason', 'quarantined_at', 'reported_exposure', 'reported_backlog',
                       'last_contact_at', 'offline_budget_currency', 'offline_budget', 'config_version',
                       'acked_seq', 'epoch', 'sync_secret_version'):
            batch_op.drop_column(column)
    with op.batch_alter_table('programmes', schema=None) as batch_op:
        for column in ('card_offline_count', 'card_offline_amount', 'floor_limit'):
            batch_op.drop_column(column)

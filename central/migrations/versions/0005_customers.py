"""customers: profiles, customer groups, consent history, idempotent creation; cards bound to a customer

Revision ID: 0005_customers
Revises: 0004_card_pins
Create Date: 2026-12-07 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005_customers'
down_revision = '0004_card_pins'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('customers',
    sa.Column('id', Id, autoincrement=True, nullable=False),
    sa.Column('external_id', sa.String(length=64), nullable=True),
    sa.Column('first_name', sa.String(length=100), nullable=True),
    sa.Column('last_name', sa.String(length=100), nullable=True),
    sa.Column('name_key', sa.String(length=201), nullable=False),
    sa.Column('gender', sa.String(length=12), nullable=False),
    sa.Column('birth_date', sa.Date(), nullable=True),
    sa.Column('address_lines', sa.JSON(), nullable=False),
    sa.Column('postcode', sa.String(length=16), nullable=True),
    sa.Column('city', sa.String(length=100), nullable=True),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('phone', sa.String(length=16), nullable=True),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('email_key', sa.String(length=254), nullable=True),
    sa.Column('social', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('store_id', Id, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_customers_store_id_stores')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customers')),
    sa.UniqueConstraint('external_id', name=op.f('uq_customers_external_id'))
    )
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customers_phone'), ['phone'], unique=False)
        batch_op.create_index(batch_op.f('ix_customers_email_key'), ['email_key'], unique=False)
        # Phone and e-mail are unique among active customers only.
        batch_op.create_index('uq_customers_email_key_active', ['email_key'], unique=True,
                              sqlite_where=sa.text('active'), postgresql_where=sa.text('active'))
        batch_op.create_index('uq_customers_phone_active', ['phone'], unique=True,
                              sqlite_where=sa.text('active'), postgresql_where=sa.text('active'))

    op.create_table('customer_groups',
    sa.Column('customer_id', Id, nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_customer_groups_customer_id_customers')),
    sa.PrimaryKeyConstraint('customer_id', 'code', name=op.f('pk_customer_groups'))
    )
    with op.batch_alter_table('customer_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customer_groups_code'), ['code'], unique=False)

    op.create_table('customer_consents',
    sa.Column('id', Id, autoincrement=True, nullable=False),
    sa.Column('customer_id', Id, nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('granted', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                            name=op.f('fk_customer_consents_customer_id_customers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer_consents'))
    )
    with op.batch_alter_table('customer_consents', schema=None) as batch_op:
        batch_op.create_index('ix_customer_consents_customer', ['customer_id', 'id'], unique=False)

    op.create_table('customer_requests',
    sa.Column('request_id', sa.Uuid(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.BigInteger(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('request_id', name=op.f('pk_customer_requests'))
    )

    # On SQLite the foreign key makes this a copy of the cards table; on PostgreSQL a column added in place.
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('customer_id', Id, nullable=True))
        batch_op.create_index(batch_op.f('ix_cards_customer_id'), ['customer_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_cards_customer_id_customers'), 'customers', ['customer_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_cards_customer_id_customers'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_cards_customer_id'))
        batch_op.drop_column('customer_id')

    op.drop_table('customer_requests')
    with op.batch_alter_table('customer_consents', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_consents_customer')

    op.drop_table('customer_consents')
    with op.batch_alter_table('customer_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_groups_code'))

    op.drop_table('customer_groups')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index('uq_customers_phone_active', sqlite_where=sa.text('active'),
                            postgresql_where=sa.text('active'))
        batch_op.drop_index('uq_customers_email_key_active', sqlite_where=sa.text('active'),
                            postgresql_where=sa.text('active'))
        batch_op.drop_index(batch_op.f('ix_customers_email_key'))
        batch_op.drop_index(batch_op.f('ix_customers_phone'))

    op.drop_table('customers')

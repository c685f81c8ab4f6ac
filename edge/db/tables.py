"""The edge node's SQLite schema: local ledger (journal), outbox, caches shipped from central."""

from __future__ import annotations

import sqlalchemy as sa

from central.db.tables import UTCDateTime

__all__ = ["metadata", "sync_state", "programmes", "store_settings", "tills", "cards", "deny_list", "journal",
           "outbox", "holds", "number_blocks", "products", "loyalty_rules", "segment_members", "vouchers"]

metadata = sa.MetaData()

# One row (id = 1): where the store stands with central.
sync_state = sa.Table(
    "sync_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_seq", sa.Integer, nullable=False, server_default="1"),
    sa.Column("acked_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("deny_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("card_feed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("watch_feed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("config_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("clock_offset", sa.Float, nullable=False, server_default="0"),
    sa.Column("quarantined", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_push_at", UTCDateTime),
    sa.Column("last_pull_at", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("segment_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("voucher_at", UTCDateTime),  # the voucher feed's cursor: last (changed at, id) applied
    sa.Column("voucher_id", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rules_version", sa.Integer, nullable=False, server_default="0"),  # the rules feed's cursor
    sa.Column("loyalty_at", UTCDateTime),  # the loyalty card feed's cursor: last (changed at, card id) seen
    sa.Column("loyalty_id", sa.Integer, nullable=False, server_default="0"),
)

# Programme rules and offline limits (sync.ProgrammeSpec as JSON), replaced whole when config moves.
programmes = sa.Table(
    "programmes", metadata,
    sa.Column("code", sa.String(32), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),
)

store_settings = sa.Table(
    "store_settings", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.String(32), nullable=False),
    sa.Column("exposure_budget", sa.BigInteger, nullable=False),
    sa.Column("budget_currency", sa.String(3), nullable=False),
    sa.Column("groups", sa.JSON, nullable=False, server_default="[]"),  # the store's groups, for earning schemes
)

tills = sa.Table(
    "tills", metadata,
    sa.Column("code", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("active", sa.Boolean, nullable=False),
)

# The store's best estimate of each card it knows: central's last word plus what it did since.
cards = sa.Table(
    "cards", metadata,
    sa.Column("number", sa.String(19), primary_key=True),
    sa.Column("programme", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("balance", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("held", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("expires_on", sa.Date),
    sa.Column("pack_sellable", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("offline_amount", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("offline_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_online_at", UTCDateTime),
    sa.Column("watch", sa.Boolean, nullable=False, server_default=sa.false()),  # tell central at the next pull
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Loyalty cards: points the store may let be spent (central's last word less what the store redeemed
    # since), tier and discount level (bps) as central last said.
    sa.Column("points", sa.BigInteger),
    sa.Column("tier", sa.String(32)),
    sa.Column("discount_bps", sa.Integer),
    sa.Column("customer_groups", sa.JSON),  # the card's customer's groups, for earning schemes
)

deny_list = sa.Table(
    "deny_list", metadata,
    sa.Column("number", sa.String(19), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

# Every till request the edge answered: the idempotency record and the store's transaction log.
journal = sa.Table(
    "journal", metadata,
    sa.Column("txn_id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("card", sa.String(19)),
    sa.Column("amount", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("original_txn_id", sa.String(36)),
    sa.Column("decision", sa.String(8), nullable=False),  # online | offline
    sa.Column("approved", sa.Boolean, nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("till", sa.String(32)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_journal_original", "original_txn_id"),
    sa.Index("ix_journal_card", "card"),
)

# Operations central has not acknowledged yet, in the store's gap-free sequence.
outbox = sa.Table(
    "outbox", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("txn_id", sa.String(36), nullable=False, unique=True),
    sa.Column("card", sa.String(19), nullable=False),
    sa.Column("delta", sa.BigInteger, nullable=False),  # what it did to the card's balance
    sa.Column("debit", sa.Boolean, nullable=False),  # counts against the offline exposure
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("entry", sa.JSON, nullable=False),  # sync.OutboxEntry (its seq is the column's)
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_outbox_card", "card"),
    # The offline exposure (sum of debits) read from the debits alone, however many receipts wait beside them.
    sa.Index("ix_outbox_debit_amount", "amount", sqlite_where=sa.text("debit = 1")),
)

# Authorizations decided offline: local holds, closed exactly once (confirm, void or expiry).
holds = sa.Table(
    "holds", metadata,
    sa.Column("txn_id", sa.String(36), primary_key=True),
    sa.Column("card", sa.String(19), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),  # pending | confirmed | voided | expired
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("resolved_by", sa.String(36)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_holds_status", "status", "expires_at"),
)

number_blocks = sa.Table(
    "number_blocks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("programme", sa.String(32), nullable=False),
    sa.Column("first_serial", sa.BigInteger, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("used", sa.Integer, nullable=False, server_default="0"),
)

# The chain's product catalogue as central ships it (sync.ProductChange). Withdrawn products stay,
# inactive: the highest version here is how far the store has pulled the catalogue.
products = sa.Table(
    "products", metadata,
    sa.Column("key", sa.String(48), primary_key=True),  # core.barcodes.product_key
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("member_price", sa.BigInteger),
    sa.Column("unit", sa.String(16), nullable=False),
    sa.Column("item_group", sa.String(32)),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Index("ix_products_version", "version"),
)

# Loyalty rules as central publishes them (sync.loyalty.RuleChange): the highest version held is the
# store's cursor; the rules in force are built from all of them.
loyalty_rules = sa.Table(
    "loyalty_rules", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("code", sa.String(32), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
)

# The segments each card is in, as central's membership feed says (sync_state.segment_version is its cursor).
segment_members = sa.Table(
    "segment_members", metadata,
    sa.Column("number", sa.String(19), primary_key=True),
    sa.Column("segment", sa.String(32), primary_key=True),
)

# Vouchers the store may take while central is unreachable (sync.VoucherSnapshot with offline true),
# found by the unkeyed hash of the typed code; ``used``: taken here offline, waiting for central to know.
vouchers = sa.Table(
    "vouchers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("lookup_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(8), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("valid_from", UTCDateTime),
    sa.Column("valid_to", UTCDateTime),
    sa.Column("min_basket", sa.BigInteger, nullable=False),
    sa.Column("card_number", sa.String(19)),
    sa.Column("used", sa.Boolean, nullable=False, server_default=sa.false()),
)

"""The central schema (SQLAlchemy Core). Every card's rows carry ``card_id`` so they can be
co-located by it when the database is sharded."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


class UTCDateTime(TypeDecorator):
    """Timestamps are stored and returned as timezone-aware UTC (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def now() -> datetime:
    return datetime.now(UTC)


def _created() -> sa.Column:
    return sa.Column("created_at", UTCDateTime, nullable=False, default=now)


programmes = sa.Table(
    "programmes", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("code", sa.String(32), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("number_prefix", sa.String(18), nullable=False),
    sa.Column("number_length", sa.SmallInteger, nullable=False),
    sa.Column("luhn", sa.Boolean, nullable=False),
    sa.Column("nominal_values", sa.JSON, nullable=False),
    sa.Column("min_amount", sa.BigInteger, nullable=False),
    sa.Column("max_amount", sa.BigInteger, nullable=False),
    sa.Column("topup_allowed", sa.Boolean, nullable=False),
    sa.Column("max_balance", sa.BigInteger),
    sa.Column("validity_months", sa.Integer),
    sa.Column("hold_ttl_seconds", sa.Integer, nullable=False),
    sa.Column("hold_expiry_policy", sa.String(16), nullable=False),
    sa.Column("service_code", sa.String(3), nullable=False),
    sa.Column("next_serial", sa.BigInteger, nullable=False, default=0),
    _created(),
    # Offline limits shipped to every store (core.limits.OfflineLimits), in the programme's minor units.
    sa.Column("floor_limit", sa.BigInteger, nullable=False, server_default="5000"),
    sa.Column("card_offline_amount", sa.BigInteger, nullable=False, server_default="10000"),
    sa.Column("card_offline_count", sa.Integer, nullable=False, server_default="3"),
    # Debits need the card's PIN (an ISO 9564 PIN block from the till's pad).
    sa.Column("pin_required", sa.Boolean, nullable=False, server_default=sa.false()),
)

stores = sa.Table(
    "stores", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("code", sa.String(32), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    _created(),
    # Store sync: the secret's version (0: none issued yet; the secret itself is derived, never stored),
    # the epoch (bumped when an operator releases a quarantine), the contiguous acknowledged sequence,
    # the offline exposure budget and what the store last reported of itself.
    sa.Column("sync_secret_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("acked_seq", sa.BigInteger, nullable=False, server_default="0"),
    # Bumped whenever what a pull ships as configuration (programmes, tills, budget) changes.
    sa.Column("config_version", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("offline_budget", sa.BigInteger, nullable=False, server_default="100000"),
    sa.Column("offline_budget_currency", sa.String(3), nullable=False, server_default="EUR"),
    sa.Column("last_contact_at", UTCDateTime),
    sa.Column("reported_backlog", sa.BigInteger),
    sa.Column("reported_exposure", sa.BigInteger),
    sa.Column("quarantined_at", UTCDateTime),
    sa.Column("quarantine_reason", sa.Text),
)

# The groups each store is in (earning schemes may name a store group).
store_groups = sa.Table(
    "store_groups", metadata,
    sa.Column("store_id", sa.ForeignKey("stores.id"), primary_key=True),
    sa.Column("code", sa.String(32), primary_key=True, index=True),
)

counterparties = sa.Table(
    "counterparties", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("code", sa.String(32), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    _created(),
)

# Tills (one per store lane) and website clients, each with its own bearer token.
terminals = sa.Table(
    "terminals", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(8), nullable=False),  # till | web
    sa.Column("store_id", sa.ForeignKey("stores.id")),
    sa.Column("code", sa.String(32), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    _created(),
    sa.UniqueConstraint("store_id", "code", name="uq_terminals_store_code"),
)

users = sa.Table(
    "users", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("failed_logins", sa.Integer, nullable=False, default=0),
    sa.Column("locked_until", UTCDateTime),
    _created(),
)

staff_tokens = sa.Table(
    "staff_tokens", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id"), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    _created(),
)

card_issues = sa.Table(
    "card_issues", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("programme_id", sa.ForeignKey("programmes.id"), nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("first_serial", sa.BigInteger, nullable=False),
    sa.Column("generated", sa.BigInteger, nullable=False, default=0),
    sa.Column("status", sa.String(16), nullable=False),  # running | completed | failed
    sa.Column("track_expiry", sa.String(4), nullable=False),  # YYMM printed on the stripe
    sa.Column("production_file", sa.String(400)),
    sa.Column("error", sa.Text),
    sa.Column("heartbeat_at", UTCDateTime),  # last chunk committed; a stale one means the run died
    sa.Column("requested_by", sa.String(64), nullable=False),
    _created(),
    sa.Column("completed_at", UTCDateTime),
)

packs = sa.Table(
    "packs", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("programme_id", sa.ForeignKey("programmes.id"), nullable=False),
    sa.Column("store_id", sa.ForeignKey("stores.id")),
    sa.Column("counterparty_id", sa.ForeignKey("counterparties.id")),
    sa.Column("status", sa.String(16), nullable=False),  # created | authorized | activated
    sa.Column("card_count", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    _created(),
    sa.Column("authorized_at", UTCDateTime),
    sa.Column("activated_at", UTCDateTime),
    sa.CheckConstraint("(store_id IS NULL) <> (counterparty_id IS NULL)", name="one_recipient"),
)

cards = sa.Table(
    "cards", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("number", sa.String(19), nullable=False, unique=True),
    sa.Column("programme_id", sa.ForeignKey("programmes.id"), nullable=False),
    sa.Column("issue_id", sa.ForeignKey("card_issues.id")),
    sa.Column("pack_id", sa.ForeignKey("packs.id"), index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("ecode_hash", sa.String(64)),
    sa.Column("ecode_failures", sa.Integer, nullable=False, default=0),
    sa.Column("ecode_locked_until", UTCDateTime),
    sa.Column("expires_on", sa.Date),
    sa.Column("replaced_by", sa.BigInteger),
    sa.Column("replaces", sa.BigInteger),
    sa.Column("activated_at", UTCDateTime),
    _created(),
    # The card's PIN as an argon2 hash (never the PIN), and wrong PINs entered in a row since the last
    # right one or staff reset; at the limit debits are refused until staff set the PIN again.
    sa.Column("pin_hash", sa.Text),
    sa.Column("pin_failures", sa.Integer, nullable=False, server_default="0"),
    # The loyalty customer the card belongs to; None: an anonymous card (e.g. pre-issued, not yet bound).
    sa.Column("customer_id", sa.ForeignKey("customers.id"), index=True),
    # The master card whose e-money (stored value) this card spends and loads: a pool of several cards.
    sa.Column("pool_id", sa.BigInteger, index=True),
)

accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("card_id", sa.ForeignKey("cards.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # stored_value (points etc. come with loyalty)
    sa.Column("currency", sa.String(3), nullable=False),
    # Cached beside the entries and always equal to their sums (see the reconciliation report).
    sa.Column("balance", sa.BigInteger, nullable=False, default=0),
    sa.Column("held", sa.BigInteger, nullable=False, default=0),
    sa.UniqueConstraint("card_id", "kind", name="uq_accounts_card_kind"),
    sa.CheckConstraint("held >= 0", name="held_not_negative"),
)

# One row per client request (approved or declined): the idempotency record and the transaction log.
operations = sa.Table(
    "operations", metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("approved", sa.Boolean, nullable=False),
    sa.Column("decline_code", sa.String(32)),
    sa.Column("channel", sa.String(8), nullable=False),  # till | web | admin | bulk | system
    sa.Column("card_id", sa.BigInteger),
    sa.Column("store_id", sa.BigInteger),
    sa.Column("terminal_id", sa.BigInteger),
    sa.Column("amount", sa.BigInteger, nullable=False, default=0),
    sa.Column("currency", sa.String(3)),
    # Operations that close another exactly once (cancel, confirm, void, expiry) name it here; unique.
    sa.Column("settles", sa.Uuid, unique=True),
    # Looser references (a refund naming the payment it refunds) go here.
    sa.Column("reference", sa.Uuid, index=True),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("device_time", UTCDateTime),
    _created(),
    sa.Index("ix_operations_card_created", "card_id", "created_at"),
    sa.Index("ix_operations_store_created", "store_id", "created_at"),
    sa.Index("ix_operations_created", "created_at"),
)

entries = sa.Table(
    "entries", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("operation_id", sa.ForeignKey("operations.id"), nullable=False, index=True),
    sa.Column("card_id", sa.BigInteger, nullable=False),
    sa.Column("account_id", sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("held_delta", sa.BigInteger, nullable=False, default=0),
    sa.Column("balance_after", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("store_id", sa.BigInteger),
    _created(),
    sa.Index("ix_entries_card", "card_id", "id"),
    sa.Index("ix_entries_account", "account_id"),
)

holds = sa.Table(
    "holds", metadata,
    sa.Column("operation_id", sa.ForeignKey("operations.id"), primary_key=True),
    sa.Column("card_id", sa.BigInteger, nullable=False),
    sa.Column("account_id", sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    # pending -> confirmed | voided | expired | clarification -> confirmed | reversed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("policy", sa.String(16), nullable=False),
    sa.Column("store_id", sa.BigInteger),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("resolved_by", sa.Uuid),
    sa.Column("resolved_at", UTCDateTime),
    _created(),
    sa.Index("ix_holds_status_expires", "status", "expires_at"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, default=now),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(48), nullable=False),
    sa.Column("target", sa.String(100)),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("remote", sa.String(64)),
    sa.Index("ix_audit_log_at", "at"),
)

bulk_loads = sa.Table(
    "bulk_loads", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("filename", sa.String(200), nullable=False),
    sa.Column("uploaded_by", sa.String(64), nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("credited", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("result_csv", sa.Text, nullable=False),
    _created(),
)


# -- store sync ---------------------------------------------------------------------------------

# Every outbox entry a store pushed, as sent: (store, epoch, seq) is unique and gap-free up to the
# store's acked_seq. An operator's release starts a new epoch, in which the store renumbers what
# central had not acknowledged; ids stay, so an entry may appear under two epochs (the second a duplicate).
store_entries = sa.Table(
    "store_entries", metadata,
    sa.Column("store_id", sa.ForeignKey("stores.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("txn_id", sa.Uuid, nullable=False, index=True),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),  # applied | duplicate | held | rejected
    sa.Column("flags", sa.JSON, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False, default=now),
    sa.Index("ix_store_entries_held", "store_id", "status"),
)

# Batches kept aside when a store's sequences conflict (a restored or cloned database): raw bytes.
sync_quarantine = sa.Table(
    "sync_quarantine", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("store_id", sa.ForeignKey("stores.id"), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False, default=now),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("released_at", UTCDateTime),
    sa.UniqueConstraint("store_id", "body_sha256", name="uq_sync_quarantine_store_body"),
)

# Nonces of signed sync requests seen within the signature window: a replay is refused by any worker.
sync_nonces = sa.Table(
    "sync_nonces", metadata,
    sa.Column("store_id", sa.ForeignKey("stores.id"), primary_key=True),
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("seen_at", UTCDateTime, nullable=False, index=True),
)

# Cards stores must refuse offline (blocked, lost, overdrawn); each change gets the next version.
deny_list = sa.Table(
    "deny_list", metadata,
    sa.Column("card_id", sa.BigInteger, primary_key=True),
    sa.Column("number", sa.String(19), nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),  # blocked | overdraft | ...
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("listed_at", UTCDateTime, nullable=False),
)

deny_changes = sa.Table(
    "deny_changes", metadata,
    sa.Column("version", Id, primary_key=True, autoincrement=True),  # the chain-wide deny-list version
    sa.Column("card_id", sa.BigInteger, nullable=False),
    sa.Column("number", sa.String(19), nullable=False),
    sa.Column("listed", sa.Boolean, nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
)

# Head-office exception cases opened by sync (overdrafts, store faults, conflicts, skewed clocks).
sync_exceptions = sa.Table(
    "sync_exceptions", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("store_id", sa.ForeignKey("stores.id"), nullable=False),
    sa.Column("card_id", sa.BigInteger),
    sa.Column("txn_id", sa.Uuid),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),  # open | closed
    _created(),
    sa.Column("closed_at", UTCDateTime),
    sa.Column("closed_by", sa.String(64)),
    sa.Index("ix_sync_exceptions_status", "status", "id"),
)

# Serials of a programme granted to a store for issuing offline; taken from programmes.next_serial.
number_blocks = sa.Table(
    "number_blocks", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("programme_id", sa.ForeignKey("programmes.id"), nullable=False),
    sa.Column("store_id", sa.ForeignKey("stores.id"), nullable=False, index=True),
    sa.Column("first_serial", sa.BigInteger, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("granted_at", UTCDateTime, nullable=False, default=now),
)

# A store's watch list: cards whose state and balance its pulls follow (id is the watch feed cursor).
store_cards = sa.Table(
    "store_cards", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("store_id", sa.ForeignKey("stores.id"), nullable=False),
    sa.Column("card_id", sa.BigInteger, nullable=False, index=True),
    sa.UniqueConstraint("store_id", "card_id", name="uq_store_cards_store_card"),
)


# -- catalogue ----------------------------------------------------------------------------------

# Products as imported from the chain's catalogue files. Every change takes the next catalogue
# version (one per changed row, unique), so stores pull the changes since theirs in pages by version.
products = sa.Table(
    "products", metadata,
    sa.Column("key", sa.String(48), primary_key=True),  # core.barcodes.product_key of the code
    sa.Column("code", sa.String(64), nullable=False),  # as the file spelled it
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("member_price", sa.BigInteger),
    sa.Column("unit", sa.String(16), nullable=False),
    sa.Column("item_group", sa.String(32)),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False, index=True, unique=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# One row (id = 1): the last catalogue version given out. Imports lock it, so they take versions
# one after the other and commit in version order.
catalogue_state = sa.Table(
    "catalogue_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)


# -- customers ----------------------------------------------------------------------------------

_ACTIVE_CUSTOMER = sa.text("active")

# Loyalty customers. Phone (E.164) and e-mail (email_key: the address in lower case) are unique among
# active customers (partial unique indexes), and indexed for searches over all customers too; name_key
# ("last first", lower case) is what name searches match.
customers = sa.Table(
    "customers", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("external_id", sa.String(64), unique=True),  # the id in the system it was imported from
    sa.Column("first_name", sa.String(100)),
    sa.Column("last_name", sa.String(100)),
    sa.Column("name_key", sa.String(201), nullable=False),
    sa.Column("gender", sa.String(12), nullable=False),
    sa.Column("birth_date", sa.Date),
    sa.Column("address_lines", sa.JSON, nullable=False),
    sa.Column("postcode", sa.String(16)),
    sa.Column("city", sa.String(100)),
    sa.Column("country", sa.String(2)),  # ISO 3166-1 alpha-2
    sa.Column("phone", sa.String(16), index=True),
    sa.Column("email", sa.String(254)),
    sa.Column("email_key", sa.String(254), index=True),
    sa.Column("social", sa.JSON, nullable=False),  # network -> id
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("channel", sa.String(8), nullable=False),  # registered by: staff | web | till | import
    sa.Column("store_id", sa.ForeignKey("stores.id")),  # the store that registered them (at a till)
    _created(),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("uq_customers_phone_active", "phone", unique=True, sqlite_where=_ACTIVE_CUSTOMER,
             postgresql_where=_ACTIVE_CUSTOMER),
    sa.Index("uq_customers_email_key_active", "email_key", unique=True, sqlite_where=_ACTIVE_CUSTOMER,
             postgresql_where=_ACTIVE_CUSTOMER),
)

# The customer groups (codes) each customer is in.
customer_groups = sa.Table(
    "customer_groups", metadata,
    sa.Column("customer_id", sa.ForeignKey("customers.id"), primary_key=True),
    sa.Column("code", sa.String(32), primary_key=True, index=True),
)

# Consents to mail, SMS and e-mail, append-only: each change is a row; a channel's current consent is
# the one given last (at), of equal times the one recorded last (id).
customer_consents = sa.Table(
    "customer_consents", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("channel", sa.String(8), nullable=False),  # mail | sms | email
    sa.Column("granted", sa.Boolean, nullable=False),
    sa.Column("source", sa.String(8), nullable=False),  # till | web | staff | import
    sa.Column("at", UTCDateTime, nullable=False),  # when the customer gave it
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),  # who recorded it (staff user, till, web client, import)
    sa.Index("ix_customer_consents_customer", "customer_id", "id"),
)

# Customer creations by client request id: a repeat returns the first result, another payload is refused.
customer_requests = sa.Table(
    "customer_requests", metadata,
    sa.Column("request_id", sa.Uuid, primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.BigInteger),
    sa.Column("result", sa.JSON),
    _created(),
)


# -- loyalty ------------------------------------------------------------------------------------

_JSONB = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# Versioned loyalty rules, append-only: every change is a new row with the next chain-wide version
# (stores pull the rows after theirs). kind "scheme": one version of an earning scheme (revision =
# the scheme's version); "plan": a loyalty programme's plan (code = the programme's code: combination
# mode, points lifetime, tiers, redemption, discount levels, e-money rates); "segment": a segment's
# rule. ``retired`` rows withdraw the code from then on.
loyalty_rules = sa.Table(
    "loyalty_rules", metadata,
    sa.Column("version", Id, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("code", sa.String(32), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_by", sa.String(64), nullable=False),
    _created(),
    sa.UniqueConstraint("kind", "code", "revision", name="uq_loyalty_rules_kind_code_revision"),
)

# A card's loyalty state beside its accounts: its tier (and since when), its discount level, the points
# it owes (returns taken back beyond its lots), and the time of its first purchase (for the first-purchase
# bonus). Pools of e-money are cards.pool_id.
loyalty_cards = sa.Table(
    "loyalty_cards", metadata,
    sa.Column("card_id", sa.ForeignKey("cards.id"), primary_key=True),
    sa.Column("tier", sa.String(32)),
    sa.Column("tier_since", UTCDateTime),
    sa.Column("discount_bps", sa.Integer, nullable=False, server_default="0"),
    sa.Column("points_debt", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("first_purchase_at", UTCDateTime),
    # When the row last changed (tier, discount level, debt...): stores follow their cards' changes by it.
    sa.Column("updated_at", UTCDateTime, nullable=False, default=now, index=True),
    sa.CheckConstraint("points_debt >= 0", name="debt_not_negative"),
)

# The live lots of each card's points (core.loyalty.points.Lot): what is left of them. A lot used up or
# expired is deleted; the ledger entries keep the history.
points_lots = sa.Table(
    "points_lots", metadata,
    sa.Column("id", sa.String(48), primary_key=True),
    sa.Column("card_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("operation_id", sa.Uuid, nullable=False),
    sa.Column("receipt_id", sa.Uuid),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("earned", sa.BigInteger, nullable=False),
    sa.Column("earned_at", UTCDateTime, nullable=False),
    sa.Column("available_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, index=True),
    sa.CheckConstraint("points > 0 AND points <= earned", name="points_left"),
)

# Receipts registered on cards (a return has a negative total and names its sale). ``at`` is the
# instant; ``local_date`` the store's business date and ``utc_offset`` (minutes) its offset then.
receipts = sa.Table(
    "receipts", metadata,
    sa.Column("id", sa.Uuid, primary_key=True),  # the client's transaction id
    sa.Column("card_id", sa.BigInteger, nullable=False),
    sa.Column("customer_id", sa.BigInteger),
    sa.Column("store_id", sa.BigInteger),
    sa.Column("terminal_id", sa.BigInteger),
    sa.Column("kind", sa.String(8), nullable=False),  # sale | return
    sa.Column("original_id", sa.Uuid, index=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("local_date", sa.Date, nullable=False),
    sa.Column("utc_offset", sa.SmallInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("lines", sa.JSON, nullable=False),
    sa.Column("items", _JSONB, nullable=False),
    sa.Column("item_groups", _JSONB, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("awards", sa.JSON, nullable=False),
    sa.Column("channel", sa.String(8), nullable=False),  # till | store (synced) | admin (added later)
    _created(),
    sa.Index("ix_receipts_card_at", "card_id", "at"),
    sa.Index("ix_receipts_local_date", "local_date"),
)

# Every tier change of every card, as the tier job, a batch or staff made it.
tier_changes = sa.Table(
    "tier_changes", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("card_id", sa.BigInteger, nullable=False),
    sa.Column("from_tier", sa.String(32)),
    sa.Column("to_tier", sa.String(32), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.String(24), nullable=False),
    sa.Column("qualifying", sa.BigInteger, nullable=False),
    sa.Column("review", UTCDateTime),
    sa.Column("source", sa.String(32), nullable=False),  # job | batch | staff
    _created(),
    sa.UniqueConstraint("card_id", "at", "to_tier", name="uq_tier_changes_card_at_tier"),
    sa.Index("ix_tier_changes_card", "card_id", "id"),
)

# Segment membership as the last run of each segment computed it, and the chain-wide feed of its changes
# (stores pull it to answer "which segments is this card in" offline).
segment_members = sa.Table(
    "segment_members", metadata,
    sa.Column("segment", sa.String(32), primary_key=True),
    sa.Column("card_id", sa.BigInteger, primary_key=True),
    sa.Column("since", UTCDateTime, nullable=False),
    sa.Index("ix_segment_members_card", "card_id"),
)

segment_changes = sa.Table(
    "segment_changes", metadata,
    sa.Column("version", Id, primary_key=True, autoincrement=True),
    sa.Column("segment", sa.String(32), nullable=False),
    sa.Column("card_id", sa.BigInteger, nullable=False),
    sa.Column("number", sa.String(19), nullable=False),
    sa.Column("member", sa.Boolean, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
)

segment_runs = sa.Table(
    "segment_runs", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("segment", sa.String(32), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("trigger", sa.String(8), nullable=False),  # schedule | demand
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("members", sa.BigInteger),
    sa.Column("added", sa.BigInteger),
    sa.Column("removed", sa.BigInteger),
    sa.Index("ix_segment_runs_segment", "segment", "id"),
)

# E-vouchers: the printed code is kept only as a keyed hash (and its last characters, to tell vouchers
# apart); value is minor units or, for percent vouchers, basis points.
vouchers = sa.Table(
    "vouchers", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(8), nullable=False),
    sa.Column("request_id", sa.Uuid, unique=True),  # the issuing client's id: a repeat returns the first
    sa.Column("kind", sa.String(8), nullable=False),  # value | percent
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("max_uses", sa.Integer, nullable=False),
    sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
    sa.Column("valid_from", UTCDateTime),
    sa.Column("valid_to", UTCDateTime),
    sa.Column("min_basket", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("card_id", sa.BigInteger, index=True),
    sa.Column("customer_id", sa.BigInteger, index=True),
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("issued_by", sa.String(64), nullable=False),
    _created(),
    sa.Column("cancelled_at", UTCDateTime),
    # What stores find a typed code by offline: an unkeyed SHA-256 of the code (75 random bits: not
    # guessable from the hash), and when the row last changed (the feed of vouchers stores may take offline).
    sa.Column("lookup_hash", sa.String(64), unique=True),
    sa.Column("updated_at", UTCDateTime, nullable=False, default=now, onupdate=now, server_default=sa.func.now(),
              index=True),
)

# Rewards customers may take for points.
rewards = sa.Table(
    "rewards", metadata,
    sa.Column("code", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("stock", sa.BigInteger),  # None: unlimited
    _created(),
)

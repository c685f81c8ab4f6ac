"""The sync wire contract: typed messages both ends exchange, as msgpack, validated on receipt.

Every message is a frozen pydantic model; :func:`encode` turns one into msgpack bytes and
:func:`decode` turns bytes back into the expected model or raises :class:`ProtocolError` (the peer
sent something malformed) — never anything else, whatever the bytes.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, TypeVar

import msgpack
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from core import DomainError, OperationKind

from .loyalty import RuleChange

__all__ = [
    "PROTOCOL_VERSION", "ProtocolError", "Message", "OutboxEntry", "PushRequest", "EntryStatus", "EntryResult",
    "PushResponse", "Cursor", "PullRequest", "DenyChange", "CardSnapshot", "ProgrammeSpec", "BlockGrant",
    "TillCredential", "StoreSettings", "ProductChange", "PullResponse", "SYNCED_KINDS", "DEBIT_KINDS", "encode",
    "LOYALTY_KINDS", "LoyaltyDetail", "ReceiptLineData", "SegmentChange", "VoucherSnapshot",
    "decode", "MSGPACK",
]

PROTOCOL_VERSION = 1
MSGPACK = "application/msgpack"
MAX_BATCH = 5000

Seq = Annotated[int, Field(strict=True, ge=1)]
Minor = Annotated[int, Field(strict=True, ge=0, le=10**12)]
Number = Annotated[str, Field(pattern=r"^[0-9]{8,19}$")]  # ASCII only: \d would take any Unicode digit
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]

K = OperationKind
# Operations an edge records locally and pushes: what it decided offline (or issued from its block).
SYNCED_KINDS = (K.SALE, K.SALE_CANCEL, K.PAYMENT, K.PAYMENT_CANCEL, K.TOPUP, K.TOPUP_CANCEL, K.REFUND,
                K.REFUND_CANCEL, K.STORE_ISSUE, K.RECEIPT, K.RECEIPT_RETURN, K.POINTS_REDEEM, K.VOUCHER_REDEEM)
# Of those, the ones that take value off a card: they count against the offline limits (a points
# redemption by the discount it gave).
DEBIT_KINDS = (K.PAYMENT, K.SALE_CANCEL, K.TOPUP_CANCEL, K.REFUND_CANCEL, K.POINTS_REDEEM, K.VOUCHER_REDEEM)
# Loyalty's synced kinds carry their details in OutboxEntry.loyalty.
LOYALTY_KINDS = (K.RECEIPT, K.RECEIPT_RETURN, K.POINTS_REDEEM, K.VOUCHER_REDEEM)


class ProtocolError(DomainError):
    """The peer sent bytes that are not a valid message of this protocol."""

    code = "bad_sync_message"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReceiptLineData(Message):
    item: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: Annotated[int, Field(strict=True, ge=1, le=10**12)]
    value: Minor
    item_group: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    discount: Minor = 0
    promotional: bool = False


class LoyaltyDetail(Message):
    """What a loyalty entry carries besides amount and card: a receipt's time (with the store's offset) and
    lines and the points the store gave; a return's lines (line index, quantity; none: all that is left);
    a redemption's points."""

    at: AwareDatetime | None = None
    lines: Annotated[tuple[ReceiptLineData, ...], Field(max_length=10_000)] = ()
    returned: Annotated[tuple[tuple[int, int], ...], Field(max_length=10_000)] | None = None
    points: Annotated[int, Field(strict=True, ge=0, le=10**15)] = 0
    voucher: Annotated[int, Field(strict=True, ge=1)] | None = None  # a voucher use: the voucher's id
    basket_total: Minor | None = None  # ... and the basket it was used on
    # A receipt's awards as the store made them: (line index or None for the receipt, scheme, version, points).
    awards: Annotated[tuple[tuple[int | None, str, int, int], ...], Field(max_length=100_000)] = ()

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class OutboxEntry(Message):
    """One operation a store decided alone, numbered by the store's gap-free sequence."""

    seq: Seq
    txn_id: uuid.UUID
    kind: OperationKind
    card_number: Number
    amount: Minor
    currency: Currency
    till: Code | None = None
    original_txn_id: uuid.UUID | None = None
    programme: Code | None = None  # store_issue: the programme the number was drawn for
    deny_version: Annotated[int, Field(strict=True, ge=0)] = 0  # deny list the store had when deciding
    decided_at: AwareDatetime  # the store's clock, corrected by its offset to central's
    device_time: AwareDatetime | None = None  # the till's clock: informational only
    loyalty: LoyaltyDetail | None = None  # receipts, returns and redemptions

    def fingerprint(self, store: str) -> str:
        """A digest of what makes the entry this entry (not its id or sequence), for idempotency:
        its fields in a fixed order, cheaper than canonical JSON for batches of thousands."""
        fields = (self.kind.value, self.card_number, self.amount, self.currency, self.till or "",
                  self.original_txn_id or "", self.programme or "", store)
        if self.loyalty is not None:
            fields += (self.loyalty.digest(),)
        return hashlib.sha256("\x1f".join(map(str, fields)).encode()).hexdigest()

    @model_serializer(mode="wrap")
    def _without_loyalty_unless_set(self, handler: SerializerFunctionWrapHandler) -> dict:
        return _omit_defaults(handler(self), loyalty=None)


class PushRequest(Message):
    """A batch of outbox entries in sequence order, with what the store reports of itself."""

    version: int = PROTOCOL_VERSION
    store: Code
    epoch: Annotated[int, Field(strict=True, ge=0)]
    entries: Annotated[tuple[OutboxEntry, ...], Field(max_length=MAX_BATCH)]
    backlog: Annotated[int, Field(strict=True, ge=0)]  # entries unacked at the store, this batch included
    offline_exposure: Minor  # offline debits central has not acknowledged yet
    sent_at: AwareDatetime


class EntryStatus(StrEnum):
    APPLIED = "applied"  # posted now
    DUPLICATE = "duplicate"  # posted before (a resent batch): no effect
    HELD = "held"  # waits for the entry it refers to (a cancel before its original)
    REJECTED = "rejected"  # recorded and flagged for head office, not posted


class EntryResult(Message):
    seq: Seq
    txn_id: uuid.UUID
    status: EntryStatus
    flags: tuple[str, ...] = ()
    message: str = ""


class PushResponse(Message):
    acked_seq: Annotated[int, Field(strict=True, ge=0)]  # highest contiguous sequence central holds
    epoch: Annotated[int, Field(strict=True, ge=0)]
    quarantined: bool = False
    message: str = ""
    results: tuple[EntryResult, ...] = ()


class Cursor(Message):
    """How far a store has pulled each feed; all start at zero."""

    deny_version: Annotated[int, Field(strict=True, ge=0)] = 0
    card_feed: Annotated[int, Field(strict=True, ge=0)] = 0  # last central entry id folded in
    watch_feed: Annotated[int, Field(strict=True, ge=0)] = 0  # last card added to the store's watch list
    config_version: Annotated[int, Field(strict=True, ge=0)] = 0
    catalogue_version: Annotated[int, Field(strict=True, ge=0)] = 0  # last product change applied
    rules_version: Annotated[int, Field(strict=True, ge=0)] = 0  # last loyalty rule row applied
    segment_version: Annotated[int, Field(strict=True, ge=0)] = 0  # last segment membership change applied
    # The voucher feed: the last (changed at, id) applied.
    voucher_at: AwareDatetime | None = None
    voucher_id: Annotated[int, Field(strict=True, ge=0)] = 0
    # Watched loyalty cards whose tier, discount level or debt changed: the last (changed at, card id) seen.
    loyalty_at: AwareDatetime | None = None
    loyalty_id: Annotated[int, Field(strict=True, ge=0)] = 0

    @model_serializer(mode="wrap")
    def _without_catalogue_until_used(self, handler: SerializerFunctionWrapHandler) -> dict:
        # Peers from before the catalogue (or loyalty) refuse unknown fields: until one is used, send none.
        return _omit_defaults(handler(self), catalogue_version=0, rules_version=0, segment_version=0,
                              voucher_at=None, voucher_id=0, loyalty_at=None, loyalty_id=0)


class PullRequest(Message):
    version: int = PROTOCOL_VERSION
    store: Code
    cursor: Cursor = Cursor()
    want_blocks: tuple[Code, ...] = ()  # programmes whose numbers ran low at the store
    # Cards the store learned of since its last pull (seen online): central adds them to its watch list.
    watch: Annotated[tuple[Number, ...], Field(max_length=MAX_BATCH)] = ()


class DenyChange(Message):
    number: Number
    listed: bool
    reason: str
    version: Annotated[int, Field(strict=True, ge=1)]


class CardSnapshot(Message):
    number: Number
    programme: Code
    state: str
    balance: int  # may be negative: a debt from offline overdraft
    held: Minor
    expires_on: str | None = None
    pack_sellable: bool = False
    # Loyalty cards: points available now, the tier, and the discount level (bps).
    points: int | None = None
    tier: Code | None = None
    discount_bps: Annotated[int, Field(strict=True, ge=0, le=10_000)] | None = None
    customer_groups: Annotated[tuple[Code, ...], Field(max_length=50)] = ()  # the card's customer's groups

    @model_serializer(mode="wrap")
    def _without_loyalty_unless_set(self, handler: SerializerFunctionWrapHandler) -> dict:
        return _omit_defaults(handler(self), points=None, tier=None, discount_bps=None, customer_groups=())


class ProgrammeSpec(Message):
    """A programme's rules and offline limits, as the edge decides with them."""

    code: Code
    name: str
    kind: str
    currency: Currency
    number_prefix: str
    number_length: int
    luhn: bool
    nominal_values: tuple[int, ...]
    min_amount: int
    max_amount: int
    topup_allowed: bool
    max_balance: int | None
    validity_months: int | None
    hold_ttl_seconds: int
    hold_expiry_policy: str
    service_code: str
    floor_limit: Minor
    card_offline_amount: Minor
    card_offline_count: Annotated[int, Field(strict=True, ge=0)]
    pin_required: bool = False  # debits need the card's PIN, which central checks

    @model_serializer(mode="wrap")
    def _without_pin_flag_unless_set(self, handler: SerializerFunctionWrapHandler) -> dict:
        # Edges from before PINs refuse unknown fields: programmes without PINs do not send the flag.
        return _omit_defaults(handler(self), pin_required=False)


class BlockGrant(Message):
    id: Annotated[int, Field(strict=True, ge=1)]
    programme: Code
    first_serial: Annotated[int, Field(strict=True, ge=0)]
    count: Annotated[int, Field(strict=True, ge=1)]


class TillCredential(Message):
    code: Code
    token_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    active: bool


class StoreSettings(Message):
    code: Code
    exposure_budget: Minor
    budget_currency: Currency
    epoch: Annotated[int, Field(strict=True, ge=0)]
    acked_seq: Annotated[int, Field(strict=True, ge=0)]
    quarantined: bool
    groups: Annotated[tuple[Code, ...], Field(max_length=100)] = ()  # the store groups schemes may name

    @model_serializer(mode="wrap")
    def _without_groups_unless_set(self, handler: SerializerFunctionWrapHandler) -> dict:
        return _omit_defaults(handler(self), groups=())


class ProductChange(Message):
    """A product as it is from ``version`` of the catalogue on (an inactive one is withdrawn)."""

    key: Annotated[str, Field(pattern=r"^[0-9A-Z][0-9A-Z ._/-]{0,47}$")]  # core.barcodes.product_key
    code: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    currency: Currency
    price: Minor
    member_price: Minor | None = None
    unit: Annotated[str, Field(pattern=r"^[a-z0-9]{1,16}$")]
    group: Code | None = None
    active: bool
    version: Annotated[int, Field(strict=True, ge=1)]

    @model_validator(mode="after")
    def _member_price_at_most_price(self) -> ProductChange:
        if self.member_price is not None and self.member_price > self.price:
            raise ValueError("member_price is above price")
        return self


class SegmentChange(Message):
    """A card joined (member) or left a segment at ``version`` of the chain-wide membership feed."""

    segment: Code
    number: Number
    member: bool
    version: Annotated[int, Field(strict=True, ge=1)]


class VoucherSnapshot(Message):
    """A voucher as it is now; ``offline`` False: the store must not take it offline (used, revoked, expired,
    or more than a store may accept alone), and forgets it."""

    id: Annotated[int, Field(strict=True, ge=1)]
    lookup_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    hint: Annotated[str, Field(max_length=8)]
    kind: str
    value: Minor
    currency: Currency
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    min_basket: Minor = 0
    card_number: Number | None = None  # bound to this card
    personal: bool = False  # bound to a customer: not taken offline (the store cannot tell their cards)
    offline: bool
    changed_at: AwareDatetime


class PullResponse(Message):
    cursor: Cursor
    server_time: AwareDatetime
    store: StoreSettings
    deny: tuple[DenyChange, ...] = ()
    cards: tuple[CardSnapshot, ...] = ()
    programmes: tuple[ProgrammeSpec, ...] = ()  # all of them, when config_version moved
    tills: tuple[TillCredential, ...] = ()  # all of the store's, when config_version moved
    blocks: tuple[BlockGrant, ...] = ()  # every block of the store not known to be used up
    products: tuple[ProductChange, ...] = ()  # catalogue changes after the cursor, by version, a page at most
    rules: tuple[RuleChange, ...] = ()  # loyalty rule rows after the cursor, by version, a page at most
    segments: tuple[SegmentChange, ...] = ()  # segment membership changes after the cursor, a page at most
    vouchers: tuple[VoucherSnapshot, ...] = ()  # vouchers changed after the cursor, a page at most
    more: bool = False  # the card feed, the catalogue or a loyalty feed was cut at a page: pull again

    @model_serializer(mode="wrap")
    def _without_catalogue_until_used(self, handler: SerializerFunctionWrapHandler) -> dict:
        return _omit_defaults(handler(self), products=(), rules=(), segments=(), vouchers=())


def _omit_defaults(data: dict, **defaults: object) -> dict:
    for name, default in defaults.items():
        if name in data and data[name] == default:
            del data[name]
    return data


M = TypeVar("M", bound=Message)


def _default(value):
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode(message: Message) -> bytes:
    """msgpack bytes of a message (UUIDs and timestamps as text)."""
    return msgpack.packb(message.model_dump(mode="python", exclude_defaults=False), default=_default,
                         use_bin_type=True)


def decode(data: bytes, model: type[M]) -> M:
    """The ``model`` message in ``data``; ProtocolError if the bytes are not one."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("a sync message is bytes")
    try:
        raw = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, max_bin_len=0,
                              max_str_len=1 << 20, max_array_len=MAX_BATCH * 2, max_map_len=64)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"a {model.__name__} is a map, got {type(raw).__name__}")
    field = model.model_fields.get("version")
    version = raw.get("version", PROTOCOL_VERSION)
    # Only a protocol version is checked here: DenyChange.version is a deny-list version.
    # type(): True and 1.0 equal 1 but are not versions.
    if (field is None or field.default == PROTOCOL_VERSION) and (
            type(version) is not int or version != PROTOCOL_VERSION):
        raise ProtocolError(f"protocol version {version!r} is not {PROTOCOL_VERSION}", code="unsupported_version")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProtocolError(f"{model.__name__}.{where}: {first['msg']}") from None

"""Request models of the HTTP APIs: validated once here, at the boundary."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

Amount = Annotated[int, Field(strict=True, gt=0, le=10**12, description="minor units (cents)")]
CardNumber = Annotated[str, Field(pattern=r"^\d{8,19}$", description="the card number, digits only")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
Name = Annotated[str, Field(min_length=1, max_length=100)]
PinBlock = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{16}$", description=(
    "the ISO 9564 format 0 PIN block from the PIN pad, 16 hex digits; never stored or logged, and not part "
    "of the request's identity (a repeat of txn_id returns the first result whatever its pin_block)"))]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TillBase(Model):
    txn_id: uuid.UUID = Field(description="client-generated id (UUID, v7 preferred); a repeat returns the first result")
    device_time: AwareDatetime | None = Field(None, description="till clock; informational only")


class SaleBody(TillBase):
    card_number: CardNumber
    amount: Amount | None = Field(None, description="required for open-value programmes")
    currency: Currency | None = None
    pin_block: PinBlock | None = Field(None, repr=False,
                                       description="sets the card's first PIN (ignored if it has one)")


class PaymentBody(TillBase):
    card_number: CardNumber
    amount: Amount
    currency: Currency | None = None
    allow_partial: bool = Field(False, description="approve what the card has if it has less than amount")
    pin_block: PinBlock | None = Field(None, repr=False,
                                       description="required when the card's programme needs a PIN")


class TopupBody(TillBase):
    card_number: CardNumber
    amount: Amount
    currency: Currency | None = None


class RefundBody(TillBase):
    card_number: CardNumber = Field(description="the card paid with, or a new card from the store's stock")
    amount: Amount
    currency: Currency | None = None
    original_txn_id: uuid.UUID | None = Field(None, description="the payment refunded (caps the refund)")


class CancelBody(TillBase):
    original_txn_id: uuid.UUID
    card_number: CardNumber | None = Field(None, description="if given, must be the original's card")


class ConfirmBody(TillBase):
    original_txn_id: uuid.UUID = Field(description="the authorization's txn_id")
    amount: Amount | None = Field(None, description="captured amount, at most the authorized one")


class VoidBody(TillBase):
    original_txn_id: uuid.UUID = Field(description="the authorization's txn_id")


class BalanceBody(Model):
    card_number: CardNumber


class LoginBody(Model):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=200)]


class ProgrammeBody(Model):
    code: Code
    name: Name
    kind: Literal["gift", "loyalty", "voucher", "employee"] = "gift"
    currency: Currency
    number_prefix: Annotated[str, Field(pattern=r"^\d{1,12}$")]
    number_length: Annotated[int, Field(strict=True, ge=8, le=19)]
    luhn: bool = True
    nominal_values: list[Amount] = Field(default_factory=list, description="empty: open value")
    min_amount: Amount = 1
    max_amount: Amount = 50_000_00
    topup_allowed: bool = False
    max_balance: Amount | None = None
    validity_months: Annotated[int, Field(strict=True, ge=1, le=600)] | None = 36
    hold_ttl_seconds: Annotated[int, Field(strict=True, ge=1, le=30 * 86400)] = 900
    hold_expiry_policy: Literal["reverse", "clarify"] = "reverse"
    service_code: Annotated[str, Field(pattern=r"^\d{3}$")] = "120"
    pin_required: bool = Field(False, description="payments and authorizations need the card's PIN")


class StoreBody(Model):
    code: Code
    name: Name


class TerminalBody(Model):
    kind: Literal["till", "web"]
    code: Code
    store_code: Code | None = None


class UserBody(Model):
    username: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
    password: Annotated[str, Field(min_length=8, max_length=200)]
    role: Literal["admin", "operator", "auditor"]


class IssueBody(Model):
    programme: Code
    quantity: Annotated[int, Field(strict=True, ge=1, le=10_000_000)]
    track_expiry: Annotated[str, Field(pattern=r"^\d{2}(0[1-9]|1[0-2])$")] | None = Field(
        None, description="YYMM encoded on the stripe; default: programme validity + 1 year")


class PackBody(Model):
    numbers: list[CardNumber] | None = Field(None, max_length=100_000)
    first_number: CardNumber | None = None
    last_number: CardNumber | None = None
    store_code: Code | None = None
    counterparty_code: Code | None = None

    @model_validator(mode="after")
    def _one_selection(self):
        if (self.numbers is None) == (self.first_number is None or self.last_number is None):
            raise ValueError("give either numbers or first_number and last_number")
        if (self.store_code is None) == (self.counterparty_code is None):
            raise ValueError("give exactly one of store_code and counterparty_code")
        return self


class PackActivationBody(Model):
    request_id: uuid.UUID = Field(description="client-generated id; a repeat returns the first result")
    amount: Amount | None = Field(None, description="value of each card; default: the single nominal value")


class PinBody(Model):
    pin: Annotated[str, Field(pattern=r"^[0-9]{4,12}$", repr=False, description="the card's new PIN, 4 to 12 digits")]


class CardActionBody(Model):
    request_id: uuid.UUID = Field(description="client-generated id; a repeat returns the first result")
    reason: Annotated[str, Field(min_length=1, max_length=200)]


class DuplicateBody(Model):
    request_id: uuid.UUID
    new_card_number: CardNumber


class HoldResolutionBody(Model):
    action: Literal["confirm", "reverse"]


class CardSearch(Model):
    prefix: Annotated[str, Field(pattern=r"^\d{1,19}$")] | None = None
    programme: Code | None = None
    state: Literal["generated", "in_pack", "active", "blocked", "closed", "expired", "replaced"] | None = None
    store: Code | None = None
    after_id: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class TransactionSearch(Model):
    card: CardNumber | None = None
    prefix: Annotated[str, Field(pattern=r"^\d{1,19}$")] | None = None
    store: Code | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    kind: list[str] = Field(default_factory=list)
    min_amount: Annotated[int, Field(ge=0)] | None = None
    max_amount: Annotated[int, Field(ge=0)] | None = None
    status: Literal["approved", "declined"] | None = None
    before: AwareDatetime | None = Field(None, description="page cursor: the 'at' of the last row seen")
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class Period(Model):
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


class AuditSearch(Model):
    actor: str | None = None
    action: str | None = None
    since: AwareDatetime | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class HoldSearch(Model):
    store: Code | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class WebCardBody(Model):
    card_number: CardNumber
    ecode: Annotated[str, Field(min_length=4, max_length=32)]


class WebPaymentBody(WebCardBody):
    txn_id: uuid.UUID
    amount: Amount
    currency: Currency | None = None


class OfflineLimitsBody(Model):
    floor_limit: Annotated[int, Field(strict=True, ge=0, le=10**12)] = Field(
        description="largest single offline debit, minor units (0: no offline debits)")
    card_offline_amount: Annotated[int, Field(strict=True, ge=0, le=10**12)] = Field(
        description="offline debits on one card since it was last seen online, minor units")
    card_offline_count: Annotated[int, Field(strict=True, ge=0, le=1000)] = Field(
        description="offline debits on one card since it was last seen online")


class OfflineBudgetBody(Model):
    amount: Annotated[int, Field(strict=True, ge=0, le=10**12)] = Field(
        description="the store's total offline exposure budget, minor units")
    currency: Currency


class NumberBlockBody(Model):
    programme: Code
    count: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] | None = Field(
        None, description="numbers in the block (default: the configured block size)")


class ExceptionCloseBody(Model):
    note: Annotated[str, Field(max_length=500)] | None = None


class ExceptionSearch(Model):
    status: Literal["open", "closed"] | None = None
    store: Code | None = None
    kind: Annotated[str, Field(max_length=16)] | None = None
    after_id: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class QuarantineSearch(Model):
    store: Code | None = None


__all__ = [name for name, value in dict(globals()).items() if isinstance(value, type) and issubclass(value, Model)]

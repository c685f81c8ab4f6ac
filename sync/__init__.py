"""The sync contract between store edge nodes and central: messages, signing and rules, without I/O."""

from .messages import (
    DEBIT_KINDS,
    LOYALTY_KINDS,
    MSGPACK,
    PROTOCOL_VERSION,
    SYNCED_KINDS,
    BlockGrant,
    CardSnapshot,
    Cursor,
    DenyChange,
    EntryResult,
    EntryStatus,
    LoyaltyDetail,
    OutboxEntry,
    ProgrammeSpec,
    ProtocolError,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    ReceiptLineData,
    SegmentChange,
    StoreSettings,
    TillCredential,
    VoucherSnapshot,
    decode,
    encode,
)
from .protocol import accept_ack, backoff_delay, check_batch, contiguous_ack, next_batch
from .signing import SignatureError, check_signature, derive_store_secret, read_signed, signed_headers

__all__ = [
    "DEBIT_KINDS", "LOYALTY_KINDS", "LoyaltyDetail", "ReceiptLineData", "SegmentChange", "VoucherSnapshot",
    "MSGPACK", "PROTOCOL_VERSION", "SYNCED_KINDS", "BlockGrant", "CardSnapshot", "Cursor",
    "DenyChange", "EntryResult", "EntryStatus", "OutboxEntry", "ProgrammeSpec", "ProtocolError", "PullRequest",
    "PullResponse", "PushRequest", "PushResponse", "SignatureError", "StoreSettings", "TillCredential",
    "accept_ack", "backoff_delay", "check_batch", "check_signature", "contiguous_ack", "decode",
    "derive_store_secret", "encode", "next_batch", "read_signed", "signed_headers",
]

"""Store authentication of sync requests: HMAC-SHA256 over method, path, timestamp, nonce and body.

The store's secret never travels: each request carries the store code, its timestamp, a fresh nonce
and the signature. The receiver checks the signature in constant time and the timestamp against a
window; remembering nonces (for as long as the window) is the receiver's job, so replays are refused.
Central derives each store's secret from its own key and the store's secret version, so no store
secret is kept in the database at all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from core import DomainError

__all__ = ["SignatureError", "SignedRequest", "sign", "signed_headers", "read_signed", "check_signature",
           "derive_store_secret", "WINDOW_SECONDS", "STORE", "TIMESTAMP", "NONCE", "SIGNATURE"]

STORE, TIMESTAMP, NONCE, SIGNATURE = "X-Tessera-Store", "X-Tessera-Timestamp", "X-Tessera-Nonce", "X-Tessera-Signature"
WINDOW_SECONDS = 300


class SignatureError(DomainError):
    """The request is not signed by a known store, is stale, or was seen before."""

    code = "bad_signature"


@dataclass(frozen=True, slots=True)
class SignedRequest:
    store: str
    timestamp: int
    nonce: str
    signature: str


def sign(secret: bytes, method: str, path: str, timestamp: int, nonce: str, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    message = f"{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{digest}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signed_headers(store: str, secret: bytes, method: str, path: str, body: bytes, now: float) -> dict[str, str]:
    """Headers that authenticate one request; ``now`` is the sender's best idea of central's time."""
    timestamp, nonce = int(now), secrets.token_hex(16)
    return {STORE: store, TIMESTAMP: str(timestamp), NONCE: nonce,
            SIGNATURE: sign(secret, method, path, timestamp, nonce, body)}


def read_signed(headers: Mapping[str, str]) -> SignedRequest:
    """The signing headers of a request, well-formed, or SignatureError."""
    try:
        store, raw_ts, nonce, signature = (headers[h] for h in (STORE, TIMESTAMP, NONCE, SIGNATURE))
    except KeyError as missing:
        raise SignatureError(f"missing header {missing.args[0]}", code="unsigned") from None
    # isascii(): str.isdigit() also takes digits int() refuses ("²") or other scripts' digits.
    if not (raw_ts.isascii() and raw_ts.isdigit()) or len(raw_ts) > 12:
        raise SignatureError("timestamp must be whole seconds since the epoch")
    if not 16 <= len(nonce) <= 64 or not (nonce.isascii() and nonce.isalnum()):
        raise SignatureError("nonce must be 16 to 64 letters or digits")
    # Hex only: hmac.compare_digest raises TypeError on non-ASCII text.
    if len(signature) != 64 or not all(c in "0123456789abcdefABCDEF" for c in signature):
        raise SignatureError("signature must be 64 hex digits")
    return SignedRequest(store, int(raw_ts), nonce, signature.lower())


def check_signature(request: SignedRequest, secret: bytes, method: str, path: str, body: bytes, now: float,
                    window: int = WINDOW_SECONDS) -> None:
    """SignatureError unless ``request`` signs this method, path and body and is fresh."""
    expected = sign(secret, method, path, request.timestamp, request.nonce, body)
    if not hmac.compare_digest(expected, request.signature):
        raise SignatureError("signature does not match")
    if abs(now - request.timestamp) > window:
        raise SignatureError(f"timestamp is {int(request.timestamp - now)} s off central's clock",
                             code="stale_request")


def derive_store_secret(key: bytes, store: str, version: int) -> bytes:
    """A store's secret: central's key, the store code and the secret's version (rotation bumps it)."""
    return hmac.new(key, f"tessera-store:{store}:{version}".encode(), hashlib.sha256).digest()

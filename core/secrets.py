"""eCodes (the scratch-off codes printed on cards) and high-entropy API tokens.

eCodes are short, so they are stored as HMAC-SHA256 under a server-side key (the pepper) that never
sits in the database; a leaked table alone does not reveal them. Tokens are 256-bit random values,
so a plain SHA-256 of them is enough and lets every request be checked quickly. Staff passwords are
low-entropy and use argon2 (in the server, which owns that library).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _random

__all__ = ["new_ecode", "new_ecodes", "hash_ecode", "ecode_matches", "new_token", "hash_token"]

_ECODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read off a scratch panel


def new_ecodes(count: int, length: int = 10) -> list[str]:
    """``count`` random eCodes of ``length`` unambiguous characters (one random draw for all)."""
    raw = _random.token_bytes(count * length)
    # 32 symbols: the low five bits of a random byte pick one without bias.
    return ["".join(_ECODE_ALPHABET[b & 31] for b in raw[i:i + length]) for i in range(0, len(raw), length)]


def new_ecode(length: int = 10) -> str:
    """A random eCode of ``length`` unambiguous characters."""
    return new_ecodes(1, length)[0]


def hash_ecode(pepper: bytes, card_number: str, ecode: str) -> str:
    """Keyed digest of a card's eCode; the card number binds the code to its card."""
    message = f"{card_number}:{ecode.strip().upper()}".encode()
    return hmac.new(pepper, message, hashlib.sha256).hexdigest()


def ecode_matches(pepper: bytes, card_number: str, ecode: str, stored: str) -> bool:
    """Constant-time comparison of a presented eCode with the stored digest."""
    return hmac.compare_digest(hash_ecode(pepper, card_number, ecode), stored)


def new_token() -> str:
    """A fresh 256-bit bearer token, URL-safe."""
    return _random.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

"""eCodes (HMAC under a pepper) and API tokens (plain SHA-256)."""

import hashlib
import hmac
import string

import pytest

from core.secrets import ecode_matches, hash_ecode, hash_token, new_ecode, new_token

ALPHABET = set("23456789ABCDEFGHJKLMNPQRSTUVWXYZ")
PEPPER = b"server-side pepper"
CARD = "6001000000000048"


# --- eCodes --------------------------------------------------------------------------------------


def test_ecode_default_length():
    assert len(new_ecode()) == 10


@pytest.mark.parametrize("length", [1, 6, 16, 32])
def test_ecode_custom_length(length):
    assert len(new_ecode(length)) == length


def test_ecodes_use_only_unambiguous_characters():
    used = set("".join(new_ecode(32) for _ in range(200)))
    assert used <= ALPHABET
    assert not used & set("01OI")
    # 6400 draws from 32 symbols: every symbol shows up, so the alphabet is not accidentally narrowed.
    assert used == ALPHABET


def test_ecodes_are_random():
    assert len({new_ecode() for _ in range(100)}) == 100


def test_hash_ecode_is_hmac_sha256_of_card_and_code():
    # Pinned: digests already stored must still verify after an upgrade.
    expected = hmac.new(PEPPER, f"{CARD}:ABCD234567".encode(), hashlib.sha256).hexdigest()
    assert hash_ecode(PEPPER, CARD, "ABCD234567") == expected


def test_hash_ecode_is_deterministic_hex():
    digest = hash_ecode(PEPPER, CARD, "ABCD234567")
    assert digest == hash_ecode(PEPPER, CARD, "ABCD234567")
    assert len(digest) == 64
    assert set(digest) <= set(string.hexdigits.lower())


def test_hash_ecode_is_keyed_by_the_pepper():
    assert hash_ecode(b"pepper one", CARD, "ABCD234567") != hash_ecode(b"pepper two", CARD, "ABCD234567")
    # Without the key the digest is not the plain hash an attacker could compute.
    assert hash_ecode(PEPPER, CARD, "ABCD234567") != hashlib.sha256(f"{CARD}:ABCD234567".encode()).hexdigest()


def test_hash_ecode_binds_the_code_to_its_card():
    assert hash_ecode(PEPPER, CARD, "ABCD234567") != hash_ecode(PEPPER, "6001000000000055", "ABCD234567")


def test_hash_ecode_normalises_case_and_whitespace():
    assert hash_ecode(PEPPER, CARD, "  abcd234567\n") == hash_ecode(PEPPER, CARD, "ABCD234567")


@pytest.mark.parametrize("presented", ["ABCD234567", "abcd234567", "AbCd234567", " ABCD234567 ", "\tabcd234567\n"])
def test_ecode_matches_ignoring_case_and_surrounding_space(presented):
    stored = hash_ecode(PEPPER, CARD, "ABCD234567")
    assert ecode_matches(PEPPER, CARD, presented, stored)


@pytest.mark.parametrize(
    ("pepper", "card", "presented"),
    [
        (PEPPER, CARD, "ABCD234568"),  # one character off
        (PEPPER, CARD, "ABCD 234567"),  # inner space is not stripped
        (PEPPER, CARD, ""),
        (b"another pepper", CARD, "ABCD234567"),
        (PEPPER, "6001000000000055", "ABCD234567"),  # the right code for another card
    ],
)
def test_ecode_does_not_match(pepper, card, presented):
    stored = hash_ecode(PEPPER, CARD, "ABCD234567")
    assert not ecode_matches(pepper, card, presented, stored)


# --- tokens --------------------------------------------------------------------------------------


def test_tokens_are_256_bit_url_safe_and_fresh():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert len(token) == 43  # 32 bytes, base64url without padding
        assert set(token) <= set(string.ascii_letters + string.digits + "-_")


def test_hash_token_is_sha256_hex():
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_hash_token_distinguishes_tokens():
    a, b = new_token(), new_token()
    assert hash_token(a) == hash_token(a)
    assert hash_token(a) != hash_token(b)

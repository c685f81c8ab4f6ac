"""Store request signing: only the exact request, signed with the store's secret, recently, passes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.signing import (
    NONCE,
    SIGNATURE,
    STORE,
    TIMESTAMP,
    WINDOW_SECONDS,
    SignatureError,
    SignedRequest,
    check_signature,
    derive_store_secret,
    read_signed,
    sign,
    signed_headers,
)

SECRET = bytes(range(32))
PATH = "/api/v1/sync/push"
BODY = b"\x85\xa5store\xa2S1"
NOW = 1_716_000_000.75


def headers(**kw) -> dict[str, str]:
    args = {"store": "S1", "secret": SECRET, "method": "POST", "path": PATH, "body": BODY, "now": NOW, **kw}
    return signed_headers(**args)


def verify(hdrs: dict[str, str], secret: bytes = SECRET, method: str = "POST", path: str = PATH, body: bytes = BODY,
           now: float = NOW) -> SignedRequest:
    request = read_signed(hdrs)
    check_signature(request, secret, method, path, body, now)
    return request


def test_signed_request_verifies():
    hdrs = headers()
    request = verify(hdrs)
    assert request == SignedRequest("S1", int(NOW), hdrs[NONCE], hdrs[SIGNATURE])
    assert set(hdrs) == {STORE, TIMESTAMP, NONCE, SIGNATURE}
    assert hdrs[STORE] == "S1" and hdrs[TIMESTAMP] == str(int(NOW))


def test_method_case_does_not_matter():
    verify(headers(method="post"), method="POST")


def test_every_request_gets_a_fresh_nonce():
    assert len({headers()[NONCE] for _ in range(20)}) == 20


def test_secret_does_not_travel():
    assert SECRET.hex() not in "".join(headers().values())


@pytest.mark.parametrize(
    "change",
    [
        {"method": "PUT"},
        {"path": "/api/v1/sync/pull"},
        {"path": PATH + "/"},
        {"body": BODY + b"\x00"},
        {"body": b""},
        {"secret": bytes(32)},
        {"secret": SECRET[:-1]},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_change_to_the_signed_request_fails(change):
    with pytest.raises(SignatureError) as caught:
        verify(headers(), **change)
    assert caught.value.code == "bad_signature"


@given(body=st.binary(max_size=64), flip=st.integers(min_value=0, max_value=63), bit=st.integers(0, 7))
def test_any_flipped_body_bit_fails(body, flip, bit):
    hdrs = headers(body=body)
    verify(hdrs, body=body)
    if body:
        tampered = bytearray(body)
        tampered[flip % len(body)] ^= 1 << bit
        with pytest.raises(SignatureError):
            verify(hdrs, body=bytes(tampered))


def test_changed_timestamp_fails_even_within_the_window():
    hdrs = headers()
    hdrs[TIMESTAMP] = str(int(NOW) + 1)
    with pytest.raises(SignatureError) as caught:
        verify(hdrs)
    assert caught.value.code == "bad_signature"


def test_changed_nonce_fails():
    hdrs = headers()
    hdrs[NONCE] = ("0" if hdrs[NONCE][0] != "0" else "1") + hdrs[NONCE][1:]
    with pytest.raises(SignatureError) as caught:
        verify(hdrs)
    assert caught.value.code == "bad_signature"


def test_changed_signature_fails():
    hdrs = headers()
    hdrs[SIGNATURE] = ("0" if hdrs[SIGNATURE][0] != "0" else "1") + hdrs[SIGNATURE][1:]
    with pytest.raises(SignatureError):
        verify(hdrs)


def test_upper_case_signature_is_the_same_signature():
    hdrs = headers()
    verify({**hdrs, SIGNATURE: hdrs[SIGNATURE].upper()})


def test_signature_is_over_method_path_timestamp_nonce_and_body():
    hdrs = headers()
    assert hdrs[SIGNATURE] == sign(SECRET, "POST", PATH, int(NOW), hdrs[NONCE], BODY)


@pytest.mark.parametrize("offset", [-WINDOW_SECONDS, 0, WINDOW_SECONDS])
def test_timestamp_within_the_window_passes(offset):
    hdrs = headers(now=1_716_000_000)
    verify(hdrs, now=1_716_000_000 + offset)


@pytest.mark.parametrize("offset", [-WINDOW_SECONDS - 1, WINDOW_SECONDS + 1, 86400])
def test_stale_timestamp_is_refused(offset):
    hdrs = headers(now=1_716_000_000)
    with pytest.raises(SignatureError) as caught:
        verify(hdrs, now=1_716_000_000 + offset)
    assert caught.value.code == "stale_request"


def test_window_can_be_narrowed():
    request = read_signed(headers(now=1000))
    check_signature(request, SECRET, "POST", PATH, BODY, 1010, window=10)
    with pytest.raises(SignatureError) as caught:
        check_signature(request, SECRET, "POST", PATH, BODY, 1011, window=10)
    assert caught.value.code == "stale_request"


def test_forged_stale_request_is_a_bad_signature_not_a_hint_about_the_clock():
    hdrs = headers(now=1000, secret=bytes(32))
    with pytest.raises(SignatureError) as caught:
        verify(hdrs, now=NOW)
    assert caught.value.code == "bad_signature"


@pytest.mark.parametrize("missing", [STORE, TIMESTAMP, NONCE, SIGNATURE])
def test_missing_header_is_unsigned(missing):
    hdrs = headers()
    del hdrs[missing]
    with pytest.raises(SignatureError) as caught:
        read_signed(hdrs)
    assert caught.value.code == "unsigned"
    assert missing in caught.value.message


def test_no_headers_at_all_is_unsigned():
    with pytest.raises(SignatureError) as caught:
        read_signed({})
    assert caught.value.code == "unsigned"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (TIMESTAMP, ""),
        (TIMESTAMP, "-5"),
        (TIMESTAMP, "1716000000.5"),
        (TIMESTAMP, "1e9"),
        (TIMESTAMP, " 1716000000"),
        (TIMESTAMP, "1" * 13),
        (TIMESTAMP, "\u00b2"),  # superscript two: str.isdigit() but not int()
        (TIMESTAMP, "\u0661\u0667\u0661\u0666"),  # Arabic-Indic digits
        (NONCE, "a" * 15),
        (NONCE, "a" * 65),
        (NONCE, "abc-def-ghi-jkl-mno"),
        (NONCE, "\u00e9" * 16),
        (SIGNATURE, "a" * 63),
        (SIGNATURE, "a" * 65),
        (SIGNATURE, "g" * 64),
        (SIGNATURE, "\u00e9" * 64),
    ],
)
def test_malformed_headers_are_refused(header, value):
    with pytest.raises(SignatureError) as caught:
        read_signed({**headers(), header: value})
    assert caught.value.code == "bad_signature"


@given(st.dictionaries(st.sampled_from([STORE, TIMESTAMP, NONCE, SIGNATURE]), st.text(max_size=70)))
def test_any_header_values_raise_only_signature_error(hdrs):
    try:
        check_signature(read_signed(hdrs), SECRET, "POST", PATH, BODY, NOW)
    except SignatureError:
        pass


def test_derived_secret_is_deterministic():
    key = b"central-key" * 3
    assert derive_store_secret(key, "S1", 1) == derive_store_secret(key, "S1", 1)
    assert len(derive_store_secret(key, "S1", 1)) == 32


def test_derived_secret_differs_per_store_version_and_key():
    key = b"central-key" * 3
    secrets = {
        derive_store_secret(key, "S1", 1),
        derive_store_secret(key, "S2", 1),
        derive_store_secret(key, "S1", 2),
        derive_store_secret(key, "S11", 1),
        derive_store_secret(b"another-key", "S1", 1),
    }
    assert len(secrets) == 5


def test_request_signed_with_an_old_secret_version_fails():
    key = b"central-key" * 3
    hdrs = headers(secret=derive_store_secret(key, "S1", 1))
    verify(hdrs, secret=derive_store_secret(key, "S1", 1))
    with pytest.raises(SignatureError):
        verify(hdrs, secret=derive_store_secret(key, "S1", 2))

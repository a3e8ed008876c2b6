"""Standard Webhooks signatures, on the specification's own test vector and its edge cases."""

import base64

import pytest

from orders_svc import errors, signatures
from orders_svc.errors import ApiError

# The test vector of the specification's reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
KEY = signatures.decode_secret(VECTOR_SECRET)
OTHER = signatures.decode_secret("whsec_" + base64.b64encode(b"x" * 32).decode())


def headers(signature: str = VECTOR_SIGNATURE, **changed: str) -> dict[str, str]:
    sent = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
    }
    return {**sent, **changed}


def refused(headers: dict[str, str], body: bytes = VECTOR_BODY, keys=(KEY,), now=VECTOR_TIMESTAMP) -> str:
    with pytest.raises(ApiError) as raised:
        signatures.verify(headers, body, keys, now=now)
    assert raised.value.status == 401
    return raised.value.details["reason"]


def test_signing_reproduces_the_specifications_test_vector():
    assert signatures.signature(KEY, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_test_vector_verifies_and_names_its_delivery():
    assert signatures.verify(headers(), VECTOR_BODY, [KEY], now=VECTOR_TIMESTAMP) == VECTOR_ID


def test_one_matching_entry_among_others_is_enough():
    listed = f"v1,AAAA v1a,{VECTOR_SIGNATURE[3:]} v2,x garbage v1,not*base64 {VECTOR_SIGNATURE}"
    assert signatures.verify(headers(listed), VECTOR_BODY, [KEY], now=VECTOR_TIMESTAMP) == VECTOR_ID


def test_any_configured_secret_verifies_so_a_secret_can_be_rotated():
    assert signatures.verify(headers(), VECTOR_BODY, [OTHER, KEY], now=VECTOR_TIMESTAMP) == VECTOR_ID
    assert refused(headers(), keys=(OTHER,)) == "webhook_signature_mismatch"
    assert refused(headers(), keys=()) == "webhook_signature_mismatch"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(missing):
    sent = headers()
    del sent[missing]
    assert refused(sent) == "webhook_headers_missing"


@pytest.mark.parametrize(
    "changed",
    [
        {"webhook-timestamp": "1614265330.0"},
        {"webhook-timestamp": "-1614265330"},
        {"webhook-timestamp": "hello"},
        {"webhook-id": "msg with spaces"},
        {"webhook-id": "x" * 256},
        {"webhook-signature": ""},
    ],
)
def test_a_malformed_header_is_refused(changed):
    assert refused(headers(**changed)) == "webhook_headers_missing"


@pytest.mark.parametrize(
    "signature",
    [
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",  # the last byte changed
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",  # padding missing: not base64
        "v1,!!!!",
        "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # an asymmetric entry is not an HMAC
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # no version
        "v1,",
    ],
)
def test_a_bad_or_malformed_signature_is_refused(signature):
    assert refused(headers(signature)) == "webhook_signature_mismatch"


def test_a_body_changed_by_one_byte_is_refused():
    assert refused(headers(), body=VECTOR_BODY.replace(b"4}", b"5}")) == "webhook_signature_mismatch"
    assert refused(headers(), body=VECTOR_BODY + b" ") == "webhook_signature_mismatch"


def test_another_id_or_timestamp_under_the_same_signature_is_refused():
    assert refused(headers(**{"webhook-id": "msg_other"})) == "webhook_signature_mismatch"
    changed = headers(**{"webhook-timestamp": str(VECTOR_TIMESTAMP + 1)})
    assert refused(changed) == "webhook_signature_mismatch"


@pytest.mark.parametrize("offset", [-301, 301, -(10**9)])
def test_a_timestamp_more_than_300_s_away_is_refused(offset):
    assert refused(headers(), now=VECTOR_TIMESTAMP + offset) == "webhook_timestamp_out_of_tolerance"


@pytest.mark.parametrize("offset", [-300, 300])
def test_a_timestamp_300_s_away_is_still_accepted(offset):
    assert signatures.verify(headers(), VECTOR_BODY, [KEY], now=VECTOR_TIMESTAMP + offset) == VECTOR_ID


def test_sign_gives_the_three_headers_that_verify_accepts():
    sent = signatures.sign(KEY, "msg_1", b"{}", now=VECTOR_TIMESTAMP)
    assert sent["webhook-timestamp"] == str(VECTOR_TIMESTAMP)
    assert signatures.verify(sent, b"{}", [KEY], now=VECTOR_TIMESTAMP + 5) == "msg_1"


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",  # not base64
        "whsec_" + base64.b64encode(b"x" * 23).decode(),  # too short
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # too long
    ],
)
def test_a_secret_that_is_not_whsec_base64_of_24_to_64_bytes_is_refused(secret):
    with pytest.raises(signatures.BadSecret):
        signatures.decode_secret(secret)


def test_the_refusals_come_from_the_catalogue():
    reasons = {p.reason for p in (errors.WEBHOOK_HEADERS_MISSING, errors.WEBHOOK_SIGNATURE_MISMATCH)}
    assert reasons == {"webhook_headers_missing", "webhook_signature_mismatch"}

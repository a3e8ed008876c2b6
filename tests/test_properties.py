"""Property-based tests of the pure parsers: cursors, If-Match, Idempotency-Key and request fingerprints."""

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orders_svc.errors import ApiError
from orders_svc.openapi import IDEMPOTENCY_KEY_PATTERN, IF_MATCH_PATTERN
from orders_svc.pagination import decode_cursor, encode_cursor
from orders_svc.preconditions import fingerprint, parse_idempotency_key, parse_if_match
from orders_svc.schemas import rfc3339

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_VERSION = 2**31 - 1

offsets = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
).map(timezone)
# Every instant Python can represent in UTC, whatever the offset it was written with.
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)


def raises_only_bad_request(call: Any, *args: Any) -> Any:
    """Run call; anything but a clean result or ApiError(400) fails the property."""
    try:
        return call(*args)
    except ApiError as exc:
        assert exc.status == 400, exc
        return exc


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- cursors -------------------------------------------------------------------------------------------


@PROPERTY
@given(aware_datetimes, st.uuids())
@example(datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), uuid.UUID(int=0))
def test_cursor_round_trips_any_aware_timestamp_to_the_microsecond(ts: datetime, order_id: uuid.UUID):
    decoded_ts, decoded_id = decode_cursor(encode_cursor(ts, order_id))
    assert decoded_id == order_id
    assert decoded_ts == ts
    assert decoded_ts.astimezone(UTC).microsecond == ts.astimezone(UTC).microsecond
    assert decoded_ts.utcoffset() is not None


@PROPERTY
@given(aware_datetimes)
def test_rfc3339_is_utc_with_four_digit_year_and_six_fraction_digits(ts: datetime):
    text = rfc3339(ts)
    assert len(text) == len("2026-11-22T03:50:10.123456Z"), text
    assert text.endswith("Z")
    assert datetime.fromisoformat(text) == ts


@PROPERTY
@given(st.text(max_size=300))
def test_decode_cursor_on_arbitrary_text_raises_nothing_but_400(text: str):
    raises_only_bad_request(decode_cursor, text)


@PROPERTY
@given(st.binary(max_size=150))
def test_decode_cursor_on_arbitrary_base64_raises_nothing_but_400(raw: bytes):
    raises_only_bad_request(decode_cursor, b64(raw))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)


@PROPERTY
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "ts": json_scalars | st.datetimes(timezones=st.none() | offsets).map(lambda d: d.isoformat()),
            "id": json_scalars | st.uuids().map(str),
            "extra": json_scalars,
        },
    )
)
@example({"ts": "0001-01-01T00:00:00+05:00", "id": str(uuid.UUID(int=1))})
@example({"ts": "9999-12-31T23:59:59-05:00", "id": str(uuid.UUID(int=1))})
def test_decode_cursor_on_arbitrary_json_objects_yields_a_bindable_position_or_400(payload: dict[str, Any]):
    result = raises_only_bad_request(decode_cursor, b64(json.dumps(payload).encode()))
    if not isinstance(result, ApiError):
        ts, order_id = result
        # The database binds timestamptz in UTC: a position the server accepts must exist in UTC.
        assert ts.astimezone(UTC).utcoffset() == timedelta(0)
        assert isinstance(order_id, uuid.UUID)


# --- If-Match --------------------------------------------------------------------------------------------

versions = st.integers(min_value=0, max_value=9_999_999_999)
tags = st.tuples(st.sampled_from(["quoted", "bare", "weak"]), versions)
blanks = st.sampled_from(["", " ", "  ", "\t"])


def render_tag(kind: str, version: int) -> str:
    return {"quoted": f'"{version}"', "bare": str(version), "weak": f'W/"{version}"'}[kind]


@PROPERTY
@given(st.lists(st.tuples(tags, blanks, blanks), min_size=1, max_size=6))
def test_if_match_list_yields_exactly_the_strong_versions_in_order(members: list[Any]):
    header = ",".join(f"{left}{render_tag(*tag)}{right}" for tag, left, right in members)
    expected = [v for (kind, v), _, _ in members if kind != "weak" and 1 <= v <= MAX_VERSION]
    assert parse_if_match(header) == expected


@PROPERTY
@given(blanks, blanks)
def test_if_match_star_means_any_version(left: str, right: str):
    assert parse_if_match(f"{left}*{right}") is None


@PROPERTY
@given(st.text(max_size=60) | st.text(alphabet='0123456789W/" ,*\t', max_size=30))
def test_if_match_on_arbitrary_text_raises_nothing_but_400(text: str):
    result = raises_only_bad_request(parse_if_match, text)
    if isinstance(result, list):
        assert all(1 <= v <= MAX_VERSION for v in result)


# --- Idempotency-Key -------------------------------------------------------------------------------------

PRINTABLE = "".join(map(chr, range(0x20, 0x7F)))
key_alphabet = st.sampled_from(PRINTABLE) | st.sampled_from("\x00\t\n\r\x1f\x7f\x80é€😀")


def expected_key(raw: str) -> str | None:
    value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    ok = 1 <= len(value) <= 255 and all(" " <= ch <= "~" for ch in value)
    return value if ok else None


@PROPERTY
@given(
    st.text(alphabet=key_alphabet, max_size=20)
    | st.text(alphabet=key_alphabet, min_size=250, max_size=262)
    | st.text(alphabet=PRINTABLE, min_size=1, max_size=257).map(lambda s: f'"{s}"')
)
@example("key\n")
@example('"key\n"')
def test_idempotency_key_accepts_exactly_1_to_255_printable_ascii_after_one_quote_pair(raw: str):
    expected = expected_key(raw)
    result = raises_only_bad_request(parse_idempotency_key, raw)
    if expected is None:
        assert isinstance(result, ApiError), repr(raw)
    else:
        assert result == expected


@PROPERTY
@given(st.text(alphabet=PRINTABLE, min_size=1, max_size=255))
def test_idempotency_key_strips_only_one_pair_of_quotes(key: str):
    assert parse_idempotency_key(f'"{key}"') == key


@pytest.mark.parametrize("raw", ["k\n", "\nk", "k\r\n", "k\x00"])
def test_idempotency_key_with_control_characters_is_400(raw: str):
    with pytest.raises(ApiError) as caught:
        parse_idempotency_key(raw)
    assert caught.value.status == 400


# --- fingerprint -----------------------------------------------------------------------------------------

json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)
SEPARATORS = [(",", ":"), (", ", ": "), (" ,\n", " :\t")]


def shuffled(value: Any, rnd: Any) -> Any:
    """The same JSON value with every object's keys in a random order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rnd) for v in value]
    return value


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@PROPERTY
@given(
    json_objects, st.randoms(use_true_random=False), st.sampled_from(SEPARATORS), st.sampled_from([None, 2])
)
def test_fingerprint_ignores_key_order_and_whitespace(body: dict[str, Any], rnd: Any, seps: Any, indent: Any):
    plain = json.dumps(body).encode()
    reordered = json.dumps(shuffled(body, rnd), separators=seps, indent=indent).encode()
    padded = b" \n" + reordered + b"\t "
    reference = fingerprint("POST", "/orders", plain)
    assert fingerprint("POST", "/orders", reordered) == reference
    assert fingerprint("POST", "/orders", padded) == reference


requests = st.tuples(
    st.sampled_from(["POST", "PATCH", "PUT"]),
    st.sampled_from(["/orders", "/orders/a", "/orders/a/confirm", "/orders/a/close"]) | st.text(max_size=12),
    json_objects,
)


@PROPERTY
@given(requests, requests)
def test_fingerprint_differs_exactly_when_method_path_or_canonical_body_differs(a: Any, b: Any):
    (method_a, path_a, body_a), (method_b, path_b, body_b) = a, b
    same_request = (method_a, path_a, canonical(body_a)) == (method_b, path_b, canonical(body_b))
    fp_a = fingerprint(method_a, path_a, json.dumps(body_a).encode())
    fp_b = fingerprint(method_b, path_b, json.dumps(body_b).encode())
    assert (fp_a == fp_b) == same_request


@PROPERTY
@given(json_objects, st.sampled_from(["PATCH", "PUT", "GET"]), st.text(min_size=1, max_size=12))
def test_fingerprint_binds_method_and_path(body: dict[str, Any], method: str, suffix: str):
    raw = json.dumps(body).encode()
    reference = fingerprint("POST", "/orders", raw)
    assert fingerprint(method, "/orders", raw) != reference
    assert fingerprint("POST", "/orders" + suffix, raw) != reference


# --- the OpenAPI document describes exactly what the parsers accept ---------------------------------------

header_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=40) | st.text(
    alphabet=' \t\x0b\x0c\r\n\xa0\x85",*W/0123456789', max_size=40
)


def accepts(parse: Any, value: str) -> bool:
    return not isinstance(raises_only_bad_request(parse, value), ApiError)


@PROPERTY
@given(header_text)
@example("\xa01")
@example("1\x0b")
def test_if_match_pattern_in_the_openapi_document_matches_exactly_what_is_accepted(value: str):
    assert (re.fullmatch(IF_MATCH_PATTERN, value) is not None) == accepts(parse_if_match, value), repr(value)


@PROPERTY
@given(header_text | st.text(alphabet=key_alphabet, min_size=250, max_size=262) | st.just('""'))
def test_idempotency_key_pattern_in_the_openapi_document_matches_exactly_what_is_accepted(value: str):
    assert (re.fullmatch(IDEMPOTENCY_KEY_PATTERN, value) is not None) == accepts(
        parse_idempotency_key, value
    ), repr(value)

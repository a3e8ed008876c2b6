"""Request headers that steer a write: `If-Match` versions and `Idempotency-Key`."""

import hashlib
import re

import msgspec
from starlette.datastructures import Headers

from . import errors

# Whitespace around members is HTTP's OWS: spaces and tabs only (RFC 9110 section 5.6.3).
_MEMBER = re.compile(r'[ \t]*(W/)?"?([0-9]{1,10})"?[ \t]*')
_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
_MAX_VERSION = 2**31 - 1
MAX_IF_MATCH_MEMBERS = 64  # a list names the versions a client has seen; more is not a client's need
# The same grammars as whole-header patterns, for the OpenAPI document (a test holds each to its parser).
_TAG = r'(W/)?("[0-9]{1,10}"|[0-9]{1,10})'
IF_MATCH_PATTERN = rf"^[ \t]*(\*|{_TAG}([ \t]*,[ \t]*{_TAG}){{0,{MAX_IF_MATCH_MEMBERS - 1}}})[ \t]*$"
# 1-255 printable ASCII, or that inside one pair of double quotes (so `""` alone is refused).
IDEMPOTENCY_KEY_PATTERN = r'^([ -~]|[ -!#-~][ -~]{0,254}|[ -~]{1,254}[ -!#-~]|"[ -~]{1,255}")$'


def single_header(headers: Headers, name: str) -> str | None:
    """A header that must not repeat: two values (two tenants, two keys) are ambiguous, so 400."""
    values = headers.getlist(name)
    if len(values) > 1:
        raise errors.BAD_HEADER_REPEATED.error(name=name)
    return values[0] if values else None


def if_match_header(headers: Headers) -> str | None:
    """If-Match is a list header: several field lines mean one comma-joined list (RFC 9110 section 5.3)."""
    values = headers.getlist("if-match")
    return ", ".join(values) if values else None


def parse_if_match(value: str) -> list[int] | None:
    """Versions an `If-Match` accepts; None means `*` (any current version).

    `"3"`, bare `3` and lists (`"2", "3"`) are accepted. Weak tags (`W/"3"`) are well-formed but never
    match (RFC 9110 strong comparison), so they contribute no version.
    """
    if value.strip(" \t") == "*":
        return None
    members = value.split(",", MAX_IF_MATCH_MEMBERS)
    if len(members) > MAX_IF_MATCH_MEMBERS:
        raise errors.IF_MATCH_TOO_LONG.error(limit=MAX_IF_MATCH_MEMBERS)
    versions: list[int] = []
    for member in members:
        match = _MEMBER.fullmatch(member)
        if match is None or member.count('"') not in (0, 2):
            raise errors.BAD_IF_MATCH.error()
        weak, digits = match.groups()
        version = int(digits)
        if not weak and 1 <= version <= _MAX_VERSION:
            versions.append(version)
    return versions


def parse_idempotency_key(value: str) -> str:
    """1-255 printable ASCII characters; one pair of surrounding double quotes is stripped."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not _KEY.fullmatch(value):  # `$` alone would let a trailing newline through
        raise errors.BAD_IDEMPOTENCY_KEY.error()
    return value


def canonical_json(body: bytes) -> bytes:
    """Key order and whitespace do not matter: decode, then re-encode with sorted keys and no spaces."""
    return msgspec.json.encode(msgspec.json.decode(body) if body.strip() else {}, order="sorted")


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    """sha256 over length-prefixed method, path and canonical body, so no two requests frame alike."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical_json(body)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()

"""The OpenAPI document as a client reads it: servers, examples that are the wire types, bearer auth and
X-Tenant-Id on tenant operations, operation ids fit for generated clients, every error with its reasons."""

import re
from typing import Any

import msgspec
import pytest

from orders_svc import errors, schemas
from orders_svc.api import OPERATIONS
from orders_svc.openapi import build_spec

SPEC = build_spec()
OPERATIONS_IN_DOCUMENT = [
    (f"{method.upper()} {path}", operation)
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
]
EACH = pytest.mark.parametrize(
    ("name", "operation"), OPERATIONS_IN_DOCUMENT, ids=[n for n, _ in OPERATIONS_IN_DOCUMENT]
)
TYPES = {t.__name__: t for t in (*schemas.EXAMPLES, schemas.Error)}


def wire_type(schema: dict[str, Any]) -> type | None:
    ref = schema.get("$ref") or schema.get("allOf", [{}])[0].get("$ref")
    return TYPES[ref.rsplit("/", 1)[1]] if ref else None


def media_of(operation: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [("request", m) for m in operation.get("requestBody", {}).get("content", {}).values()]
    for status, response in operation["responses"].items():
        found += [(status, m) for m in response.get("content", {}).values()]
    return found


def test_the_document_names_its_server_relative_to_where_it_is_served():
    assert SPEC["servers"] == [{"url": "/", "description": "The service that serves this document"}]


@EACH
def test_every_body_has_an_example_of_its_own_wire_type(name, operation):
    for where, media in media_of(operation):
        examples = [e["value"] for e in media.get("examples", {}).values()]
        if "example" in media:
            examples.append(media["example"])
        assert examples, f"{name} {where}: no example"
        kind = wire_type(media["schema"])
        for example in examples:
            if kind is not None:  # decodes as the type the service itself encodes and decodes
                assert msgspec.json.decode(msgspec.json.encode(example), type=kind) is not None


@EACH
def test_every_error_response_shows_each_of_its_reasons(name, operation):
    for status, response in operation["responses"].items():
        if int(status) < 400:
            continue
        media = response["content"]["application/json"]
        bodies = [e["value"] for e in media["examples"].values()]
        assert {b["code"] for b in bodies} == {errors.code_of(int(status))}, name
        enum = media["schema"].get("allOf", [{}, {}])[1]
        reasons = (
            enum.get("properties", {})
            .get("details", {})
            .get("properties", {})
            .get("reason", {})
            .get("enum", [])
        )
        assert set(reasons) == {b["details"]["reason"] for b in bodies if "reason" in b.get("details", {})}, (
            name,
            status,
        )
        for reason in reasons:
            assert f"`{reason}`" in response["description"], (name, status, reason)
        for example in media["examples"].values():  # a message template is filled in, as the service sends it
            assert "{" not in example["summary"] + example["value"]["message"], example


def test_tenant_operations_take_x_tenant_id_or_the_bearer_token():
    for op in OPERATIONS:
        operation = SPEC["paths"][op.path][op.method.lower()]
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        if op.tenant:
            assert "X-Tenant-Id" in headers and operation["security"] == [{"bearer": []}, {}], op.operation_id
        else:
            assert "X-Tenant-Id" not in headers and "security" not in operation, op.operation_id
    assert SPEC["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_operation_ids_are_unique_identifiers_and_every_operation_is_tagged():
    ids = [operation["operationId"] for _, operation in OPERATIONS_IN_DOCUMENT]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) for i in ids), ids
    tags = {t["name"] for t in SPEC["tags"]}
    assert all(set(operation["tags"]) <= tags for _, operation in OPERATIONS_IN_DOCUMENT)


def test_a_change_of_status_shows_the_order_in_its_new_status_and_a_refusal_from_another():
    confirmed = SPEC["paths"]["/orders/{order_id}/confirm"]["patch"]
    assert confirmed["responses"]["200"]["content"]["application/json"]["example"]["status"] == "confirmed"
    closed = SPEC["paths"]["/orders/{order_id}/close"]["post"]["responses"]
    assert closed["200"]["content"]["application/json"]["example"]["status"] == "closed"
    refused = closed["409"]["content"]["application/json"]["examples"]["invalid_transition"]["value"]
    assert refused["message"].startswith("cannot close an order that is ")
    assert refused["details"]["currentStatus"] not in ("confirmed", "closed")


def test_every_parameter_has_an_example_that_its_schema_allows():
    for name, operation in OPERATIONS_IN_DOCUMENT:
        for parameter in operation.get("parameters", []):
            if "example" not in parameter:
                continue
            pattern = parameter["schema"].get("pattern")
            if pattern:
                assert re.search(pattern, parameter["example"]), (name, parameter)

"""Written down once, true everywhere: the error catalogue, the state machine, the route table."""

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

import orders_svc
from orders_svc import errors, states
from orders_svc.api import OPERATIONS
from orders_svc.errors import Problem
from orders_svc.openapi import build_spec
from orders_svc.queries import orders as queries
from orders_svc.queries.orders import Target
from orders_svc.resources import load_sql
from orders_svc.states import OrderStatus

PACKAGE = Path(orders_svc.__file__).parent
CATALOGUE = {name: value for name, value in vars(errors).items() if isinstance(value, Problem)}


def test_errors_are_raised_from_the_catalogue_never_built_by_hand():
    built = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "errors.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bApiError\(", line)
    ]
    assert built == []


def test_every_problem_has_a_code_of_the_contract_and_each_reason_one_status():
    statuses: dict[str, set[int]] = {}
    for problem in [*CATALOGUE.values(), *errors.BY_CONSTRAINT.values()]:
        assert problem.code in errors.CODES.values(), problem
        if problem.reason is not None:
            statuses.setdefault(problem.reason, set()).add(problem.status)
    assert all(len(found) == 1 for found in statuses.values()), statuses


def test_a_reason_has_one_message_so_clients_and_logs_see_one_wording():
    messages: dict[str, set[str]] = {}
    for problem in CATALOGUE.values():
        if problem.reason is not None:
            messages.setdefault(problem.reason, set()).add(problem.message)
    assert all(len(found) == 1 for found in messages.values()), messages


def test_raising_a_problem_fills_its_message_and_declared_details_only():
    error = errors.INVALID_TRANSITION.error(action="close", currentStatus="draft")
    assert (error.status, error.message) == (409, "cannot close an order that is draft")
    assert error.details == {"reason": "invalid_transition", "currentStatus": "draft"}
    assert errors.REQUEST_IN_PROGRESS.error().headers == {"Retry-After": "1"}


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.operation_id)
def test_the_document_lists_every_error_an_operation_declares_with_its_reason(op):
    operation = build_spec()["paths"][op.path][op.method.lower()]
    for problem in op.errors:
        response = operation["responses"][str(problem.status)]
        assert problem.describe() in response["description"], (problem, response["description"])
        if problem.reason is not None:
            [_, reasons] = response["content"]["application/json"]["schema"]["allOf"]
            assert problem.reason in reasons["properties"]["details"]["properties"]["reason"]["enum"]


def test_operation_ids_are_unique_identifiers():
    ids = [op.operation_id for op in OPERATIONS]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[a-z][a-z_]*", i) for i in ids)


# ------------------------------------------------------------------------------------------ states
# Where a transition's guard is not in the block <action>_order: a payment's success pays its order in the
# statement that settles the payment (sql/payments.sql).
GUARDED_IN = {"pay": "settle_payment"}


def guard_of(block: str) -> tuple[set[str], str]:
    """The statuses the block's first guarded UPDATE of orders accepts and the status it sets."""
    sql = load_sql()[block]
    sql = sql[sql.index("UPDATE orders") :]
    target = re.search(r"SET status = '(\w+)'", sql)
    sources = re.search(r"AND status (?:= '(\w+)'|IN \(([^)]*)\))", sql)
    assert target and sources, block
    listed = sources.group(1) or sources.group(2)
    return set(re.findall(r"\w+", listed)), target.group(1)


# The transitions whose guarded UPDATE names its statuses in SQL; close and cancel run transition_order,
# whose guard takes them from the transition (tested on the database below).
EXPLICIT = (states.CONFIRM, states.PAY)
WITH_EVENT = (states.CLOSE, states.CANCEL)


def test_every_transition_has_its_guard():
    assert set(EXPLICIT) | set(WITH_EVENT) == set(states.TRANSITIONS)


@pytest.mark.parametrize("transition", EXPLICIT, ids=lambda t: t.action)
def test_each_sql_guard_allows_exactly_the_transitions_of_the_state_machine(transition):
    sources, target = guard_of(GUARDED_IN.get(transition.action, f"{transition.action}_order"))
    assert sources == set(transition.sources) and target == transition.target


EVENT_FIELDS = {
    OrderStatus.CLOSED: {"orderId", "tenantId", "totalCents", "closedAt"},
    OrderStatus.CANCELLED: {"orderId", "tenantId", "reason", "cancelledAt"},
}


@pytest.mark.parametrize("status", list(OrderStatus))
@pytest.mark.parametrize("transition", WITH_EVENT, ids=lambda t: t.action)
async def test_transition_order_moves_exactly_the_sources_of_its_transition_with_one_event(
    db, tenant, transition, status
):
    order_id, event_id = uuid.uuid4(), uuid.uuid4()
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO orders (id, tenant_id, status, version, total_cents, created_at, updated_at)"
            " VALUES ($1, $2, $3, 3, 500, now(), now())",
            order_id,
            tenant,
            status,
        )
        target = Target(tenant, order_id, None)
        row = await queries.transition_order(conn, target, transition, event_id, datetime.now(UTC), "why")
        events = await conn.fetch("SELECT id, event_type, payload FROM outbox WHERE order_id = $1", order_id)
        stored = await conn.fetchrow("SELECT status, version FROM orders WHERE id = $1", order_id)
    if status not in transition.sources:
        assert row is None and events == [] and tuple(stored) == (status, 3)
        return
    assert row is not None and (row.status, row.version) == (transition.target, 4) == tuple(stored)
    [(stored_id, event_type, payload)] = events
    payload = json.loads(payload)
    assert stored_id == event_id and event_type == f"orders.{transition.target}"
    assert set(payload) == EVENT_FIELDS[transition.target]
    assert (payload["orderId"], payload["tenantId"]) == (str(order_id), tenant)
    assert payload.get("totalCents", 500) == 500 and payload.get("reason", "why") == "why"


async def test_the_status_check_constraint_allows_exactly_the_states_of_the_machine(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        definition = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'orders_status_check'"
        )
    finally:
        await conn.close()
    assert set(re.findall(r"'(\w+)'", definition)) == set(OrderStatus)


def test_the_document_lists_the_states_of_the_machine():
    schemas = build_spec()["components"]["schemas"]
    assert set(schemas["OrderStatus"]["enum"]) == set(OrderStatus)


def test_every_state_is_reachable_and_the_final_ones_are_left_by_nothing():
    reached = {states.INITIAL} | {t.target for t in states.TRANSITIONS}
    assert reached == set(OrderStatus)
    assert {OrderStatus.CLOSED, OrderStatus.CANCELLED} == states.FINAL

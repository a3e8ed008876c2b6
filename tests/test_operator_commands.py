"""What an operator asks without SQL: `orders-svc outbox status` (the undelivered events) and
`orders-svc keys show|forget` (one tenant's Idempotency-Key), against a real database."""

import json
import os
import subprocess
import sys
import uuid

import pytest

from helpers import tenant_headers

CLI = [sys.executable, "-m", "orders_svc.cli"]


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("ORDERS_")}
    env |= {"DATABASE_URL": database_url, "ORDERS_LOG_LEVEL": "WARNING"}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


async def add_event(db, event_type: str, age_s: int, **state: str) -> None:
    """One outbox row, `age_s` seconds old, in the state the SQL expressions in `state` give it."""
    columns = ", ".join(state)
    values = "".join(f", {expression}" for expression in state.values())
    await db.execute(
        f"INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, payload, created_at"
        f"{', ' if state else ''}{columns}) "
        f"VALUES ($1, $2, $3, 2, 'ops', '{{}}', now() - make_interval(secs => $4){values})",
        uuid.uuid4(),
        event_type,
        uuid.uuid4(),
        age_s,
    )


async def test_outbox_status_counts_undelivered_events_per_type_and_ages_the_oldest(
    fresh_db, fresh_database_url
):
    empty = cli(fresh_database_url, "outbox", "status")
    assert (empty.returncode, empty.stdout) == (
        0,
        "outbox: every event published; none pending, none dead-lettered\n",
    )

    await add_event(fresh_db, "orders.closed", 90)  # due now
    await add_event(
        fresh_db, "orders.closed", 30, attempts="2", next_attempt_at="now() + interval '1 minute'"
    )
    await add_event(fresh_db, "orders.closed", 600, attempts="5", dead_at="now()")
    await add_event(fresh_db, "orders.closed", 900, published_at="now()")
    await add_event(fresh_db, "orders.cancelled", 5, published_at="now()")
    await add_event(fresh_db, "orders.cancelled", 700, attempts="5", dead_at="now()")

    result = cli(fresh_database_url, "outbox", "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    by_type = {row.pop("event_type"): row for row in status["by_event_type"]}
    assert by_type["orders.cancelled"] == {
        "pending": 0,
        "backing_off": 0,
        "dead": 1,
        "oldest_pending_age": None,
    }
    closed = by_type["orders.closed"]
    assert (closed["pending"], closed["backing_off"], closed["dead"]) == (2, 1, 1)
    assert 90 <= closed["oldest_pending_age"] < 600  # the dead and the published ones are not pending
    assert status["total"]["pending"] == 2 and status["total"]["dead"] == 2

    table = cli(fresh_database_url, "outbox", "status").stdout.splitlines()
    assert table[0].split() == ["event", "type", "pending", "backing", "off", "dead", "oldest", "pending"]
    assert table[1].split()[:4] == ["orders.cancelled", "0", "0", "1"]

    late = cli(fresh_database_url, "outbox", "status", "--max-age", "60")
    assert late.returncode == 1 and late.stderr.startswith(
        "orders-svc outbox status: the oldest pending event"
    )
    assert cli(fresh_database_url, "outbox", "status", "--max-age", "3600").returncode == 0


async def test_keys_show_and_forget_act_on_one_tenants_key_only(fresh_client, fresh_database_url, fresh_db):
    tenant, stranger, key = (
        f"t-{uuid.uuid4().hex[:8]}",
        f"t-{uuid.uuid4().hex[:8]}",
        f"key-{uuid.uuid4().hex}",
    )
    created = await fresh_client.post("/orders", headers=tenant_headers(tenant, **{"Idempotency-Key": key}))
    assert created.status_code == 201

    shown = cli(fresh_database_url, "keys", "show", tenant, f'"{key}"')  # quoted, as a client may send it
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert (record["tenantId"], record["key"], record["responseStatus"]) == (tenant, key, 201)
    assert record["responseBody"] == created.json() and not record["expired"] and not record["inProgress"]

    for command in ("show", "forget"):
        foreign = cli(fresh_database_url, "keys", command, stranger, key)
        assert foreign.returncode == 1
        assert foreign.stderr == f"orders-svc keys {command}: tenant {stranger!r} has no key {key!r}\n"
    assert await fresh_db.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", key) == 1

    forgotten = cli(fresh_database_url, "keys", "forget", tenant, key)
    assert forgotten.returncode == 0 and forgotten.stdout.startswith(
        f"forgot key {key!r} of tenant {tenant!r}"
    )
    again = await fresh_client.post("/orders", headers=tenant_headers(tenant, **{"Idempotency-Key": key}))
    assert again.status_code == 201 and again.json()["id"] != created.json()["id"]  # ran as a new request


@pytest.mark.parametrize(
    ("tenant", "key", "problem"),
    [("acme", "k" * 256, "key 'kkk"), ("not a tenant", "k", "tenant 'not a tenant' is not 1-64 characters")],
)
def test_a_key_or_tenant_a_request_could_not_carry_is_one_line(fresh_database_url, tenant, key, problem):
    result = cli(fresh_database_url, "keys", "show", tenant, key)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"orders-svc keys show: {problem}"), result.stderr

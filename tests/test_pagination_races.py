"""Keyset paging stays exact while rows are written, and under ties on created_at down to the microsecond."""

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import confirm, create, create_id, tenant_headers

ROUNDS = 5


def new_tenant() -> str:
    return f"page-{uuid.uuid4().hex[:12]}"


async def walk(
    client: httpx.AsyncClient,
    tenant: str,
    limit: int,
    between_pages: Callable[[], Awaitable[Any]] | None = None,
    max_pages: int = 1000,
) -> list[dict[str, Any]]:
    """Every item of every page, following nextCursor until it is null."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(max_pages):
        response = await client.get("/orders", params=params, headers=tenant_headers(tenant))
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if page["nextCursor"] is None:
            assert len(page["items"]) <= limit
            return items
        assert len(page["items"]) == limit  # only the last page may be short
        params["cursor"] = page["nextCursor"]
        if between_pages is not None:
            await between_pages()
    raise AssertionError(f"still paging after {max_pages} pages")


async def keyset_order(db: asyncpg.Pool, tenant: str) -> list[str]:
    """The tenant's order ids sorted (created_at DESC, id DESC) here, not by the database."""
    rows = await db.fetch("SELECT id, created_at FROM orders WHERE tenant_id = $1", tenant)
    return [str(r["id"]) for r in sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def assert_no_duplicates(found: list[str]) -> None:
    assert len(found) == len(set(found)), "an order was served twice"


async def insert_at(db: asyncpg.Pool, tenant: str, stamps: list[datetime]) -> None:
    """Orders written straight into the table, at exactly these created_at values."""
    await db.executemany(
        "INSERT INTO orders (id, tenant_id, status, version, created_at, updated_at)"
        " VALUES ($1, $2, 'draft', 1, $3, $3)",
        [(uuid.uuid4(), tenant, ts) for ts in stamps],
    )


async def test_fifteen_orders_page_as_ten_then_five_and_end_with_a_null_cursor(client, tenant, db):
    await asyncio.gather(*(create_id(client, tenant) for _ in range(15)))
    first = (await client.get("/orders", params={"limit": 10}, headers=tenant_headers(tenant))).json()
    assert len(first["items"]) == 10 and first["nextCursor"] is not None
    params = {"limit": 10, "cursor": first["nextCursor"]}
    second = (await client.get("/orders", params=params, headers=tenant_headers(tenant))).json()
    assert len(second["items"]) == 5 and second["nextCursor"] is None
    assert ids(first["items"]) + ids(second["items"]) == await keyset_order(db, tenant)


def writer(client: httpx.AsyncClient, tenant: str, older: Any) -> Callable[[], Awaitable[Any]]:
    async def writes() -> None:
        # New orders land before the cursor; confirming an older one changes updated_at, not its place.
        await asyncio.gather(
            *(create(client, tenant) for _ in range(4)), confirm(client, tenant, next(older), total=1)
        )

    return writes


async def test_writes_between_pages_never_duplicate_or_drop_older_orders(client, db):
    for _ in range(ROUNDS):
        tenant = new_tenant()
        await asyncio.gather(*(create_id(client, tenant) for _ in range(30)))
        before = await keyset_order(db, tenant)
        served = ids(await walk(client, tenant, 7, between_pages=writer(client, tenant, iter(before))))
        assert served == before
        assert len(await keyset_order(db, tenant)) > len(before)  # the writes really happened


async def test_paging_concurrently_with_a_stream_of_inserts_serves_every_older_order_once(client, db):
    for _ in range(ROUNDS):
        tenant = new_tenant()
        await asyncio.gather(*(create_id(client, tenant) for _ in range(40)))
        before = await keyset_order(db, tenant)
        inserts = asyncio.gather(*(create(client, tenant) for _ in range(40)))
        served = ids(await walk(client, tenant, 7))
        assert all(r.status_code == 201 for r in await inserts)
        assert_no_duplicates(served)
        # Pages may start with orders that committed before the first page; after those come exactly
        # the older ones, in order.
        older = [order_id for order_id in served if order_id in set(before)]
        assert older == before
        assert served[-len(before) :] == before
        assert served == [i for i in await keyset_order(db, tenant) if i in set(served)]


async def test_two_hundred_concurrent_creates_page_exactly_in_keyset_order(client, db):
    tenant = new_tenant()
    responses = await asyncio.gather(*(create(client, tenant) for _ in range(200)))
    assert all(r.status_code == 201 for r in responses)
    created = {r.json()["id"] for r in responses}
    stamps = await db.fetch("SELECT created_at FROM orders WHERE tenant_id = $1", tenant)
    milliseconds = {r["created_at"].replace(microsecond=r["created_at"].microsecond // 1000) for r in stamps}
    assert len(milliseconds) < len(stamps), "no two orders shared a millisecond; the race was not tight"
    for limit in (7, 100):
        served = ids(await walk(client, tenant, limit))
        assert_no_duplicates(served)
        assert set(served) == created
        assert served == await keyset_order(db, tenant)


@pytest.mark.parametrize("limit", [1, 3, 7, 10, 100])
async def test_ties_on_created_at_are_broken_by_id_and_one_microsecond_apart_is_kept(client, db, limit):
    """Groups of orders share an exact timestamp, neighbouring groups differ by 1 µs, all in one millisecond.

    A cursor that dropped the id would repeat or skip tied rows; one that kept only milliseconds would skip
    every row of the page boundary's millisecond.
    """
    tenant = new_tenant()
    base = datetime(2026, 11, 22, 3, 50, 10, 123400, tzinfo=UTC)
    stamps = [base + timedelta(microseconds=us) for us in (0, 1, 2, 500, 501) for _ in range(9)]
    stamps += [base + timedelta(milliseconds=ms) for ms in (-2, -1, 1, 2) for _ in range(3)]
    await insert_at(db, tenant, stamps)
    served = await walk(client, tenant, limit)
    assert_no_duplicates(ids(served))
    assert ids(served) == await keyset_order(db, tenant)
    assert len(served) == len(stamps)
    served_stamps = [datetime.fromisoformat(item["createdAt"]) for item in served]
    assert served_stamps == sorted(stamps, reverse=True)


async def test_ties_between_api_created_orders_and_same_timestamp_rows_page_exactly(client, db):
    """Rows written at the very timestamps of API-created orders: each tie is split by id across pages."""
    for _ in range(ROUNDS):
        tenant = new_tenant()
        await asyncio.gather(*(create_id(client, tenant) for _ in range(10)))
        existing = await db.fetch("SELECT created_at FROM orders WHERE tenant_id = $1", tenant)
        await insert_at(db, tenant, [r["created_at"] for r in existing for _ in range(2)])
        served = ids(await walk(client, tenant, 4))
        assert_no_duplicates(served)
        assert served == await keyset_order(db, tenant)
        assert len(served) == 30


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    offsets=st.lists(
        st.integers(min_value=0, max_value=2000) | st.sampled_from([0, 1, 999, 1000, 1001]), max_size=40
    ),
    limit=st.integers(min_value=1, max_value=12),
)
def test_any_multiset_of_timestamps_pages_back_exactly_in_keyset_order(
    live_server, database_url, offsets, limit
):
    """Any timestamps (repeated, 1 µs apart, across millisecond edges), any page size: every row once."""
    tenant = new_tenant()
    base = datetime(2026, 11, 22, 3, 50, 10, 999000, tzinfo=UTC)
    rows = [(uuid.uuid4(), base + timedelta(microseconds=us)) for us in offsets]
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO orders (id, tenant_id, status, version, created_at, updated_at)"
            " VALUES (%s, %s, 'draft', 1, %s, %s)",
            [(order_id, tenant, ts, ts) for order_id, ts in rows],
        )
    expected = [str(order_id) for order_id, _ in sorted(rows, key=lambda r: (r[1], r[0]), reverse=True)]
    served: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    with httpx.Client(base_url=live_server, headers=tenant_headers(tenant)) as http:
        for _ in range(len(rows) + 1):
            page = http.get("/orders", params=params).json()
            served += ids(page["items"])
            if page["nextCursor"] is None:
                break
            params["cursor"] = page["nextCursor"]
    assert served == expected


async def test_deleting_the_cursor_row_does_not_break_paging(client, tenant, db):
    await insert_at(
        db, tenant, [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=i % 4) for i in range(20)]
    )
    expected = await keyset_order(db, tenant)
    headers = tenant_headers(tenant)
    first = (await client.get("/orders", params={"limit": 5}, headers=headers)).json()
    await db.execute("DELETE FROM orders WHERE id = $1", uuid.UUID(first["items"][-1]["id"]))
    rest = await walk_from(client, tenant, first["nextCursor"])
    assert ids(first["items"]) + rest == expected


async def walk_from(client: httpx.AsyncClient, tenant: str, cursor: str) -> list[str]:
    served: list[str] = []
    while cursor is not None:
        params = {"limit": 5, "cursor": cursor}
        page = (await client.get("/orders", params=params, headers=tenant_headers(tenant))).json()
        served += ids(page["items"])
        cursor = page["nextCursor"]
    return served


def cursor_for(ts: str) -> str:
    raw = json.dumps({"ts": ts, "id": str(uuid.uuid4())}).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "ts", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"], ids=["before-year-1", "after-9999"]
)
async def test_a_cursor_whose_timestamp_leaves_the_utc_range_is_400_not_500(client, tenant, ts):
    response = await client.get("/orders", params={"cursor": cursor_for(ts)}, headers=tenant_headers(tenant))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_request"


async def test_a_cursor_at_the_edges_of_the_utc_range_pages_normally(client, tenant, db):
    await insert_at(db, tenant, [datetime(2026, 1, 1, tzinfo=UTC)])
    for ts, count in (("9999-12-31T23:59:59.999999Z", 1), ("0001-01-01T00:00:00Z", 0)):
        params = {"cursor": cursor_for(ts)}
        response = await client.get("/orders", params=params, headers=tenant_headers(tenant))
        assert response.status_code == 200, response.text
        assert len(response.json()["items"]) == count

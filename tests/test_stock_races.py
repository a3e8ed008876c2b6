"""Stock under real concurrency over real connections: never oversold, never deadlocked, accounted for."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from catalogue import add_product, lines, order_with, stock_of

from orders_svc.db import create_pool
from orders_svc.housekeeping import expire_reservations

from conftest import test_settings as settings_for
from helpers import cancel, tenant_headers
from support import app_client


@pytest.fixture
async def http(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real server; a connection of its own for each request in flight."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=live_server, limits=limits, timeout=60) as client:
        yield client


async def gather(calls) -> list[httpx.Response]:
    responses = list(await asyncio.gather(*calls))
    assert all(r.status_code < 500 for r in responses), [r.text for r in responses if r.status_code >= 500]
    return responses


async def test_120_buyers_of_50_units_make_exactly_50_orders_and_70_refusals(http, db, tenant):
    product = await add_product(db, tenant, stock=50, price=100)
    responses = await gather([order_with(http, tenant, lines((product, 1))) for _ in range(120)])
    statuses = [r.status_code for r in responses]
    assert (statuses.count(201), statuses.count(409)) == (50, 70), statuses
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["details"]["reason"] == "insufficient_stock"
        [short] = refused.json()["details"]["items"]
        assert short == {"productId": product, "requested": 1, "available": 0}
    assert await stock_of(db, product) == 0
    sold = await db.fetchval(
        "SELECT coalesce(sum(quantity), 0) FROM order_items WHERE tenant_id = $1 AND product_id = $2",
        tenant,
        uuid.UUID(product),
    )
    orders = await db.fetchval("SELECT count(*) FROM orders WHERE tenant_id = $1", tenant)
    assert (sold, orders) == (50, 50)


async def test_buyers_of_four_tenants_at_once_each_sell_their_own_stock_and_no_more(http, db, tenant):
    """30 buyers in each of four tenants at once, of a product with stock 12 and one with stock 100 each
    (orders of several tenants are placed in one transaction: db.Database.batched): each tenant sells
    exactly 12 of its scarce product, every order, line and stock change is of the buyer's own tenant, and
    the refusals name the buyer's product."""
    tenants = [f"{tenant}-{n}" for n in range(4)]
    scarce = {t: await add_product(db, t, stock=12) for t in tenants}
    plenty = {t: await add_product(db, t, stock=100) for t in tenants}
    calls = [order_with(http, t, lines((scarce[t], 1), (plenty[t], 1))) for _ in range(30) for t in tenants]
    responses = await gather(calls)
    by_tenant = {t: [r for i, r in enumerate(responses) if tenants[i % 4] == t] for t in tenants}
    for t in tenants:
        statuses = [r.status_code for r in by_tenant[t]]
        assert (statuses.count(201), statuses.count(409)) == (12, 18), (t, statuses)
        for refused in (r for r in by_tenant[t] if r.status_code == 409):
            [short] = refused.json()["details"]["items"]
            assert short == {"productId": scarce[t], "requested": 1, "available": 0}
        assert (await stock_of(db, scarce[t]), await stock_of(db, plenty[t])) == (0, 88)
    lines_by_tenant = await db.fetch(
        "SELECT o.tenant_id, count(*) AS lines, count(*) FILTER (WHERE i.tenant_id <> o.tenant_id "
        "OR p.tenant_id <> o.tenant_id) AS foreign_lines "
        "FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id "
        "WHERE o.tenant_id = ANY ($1::text[]) GROUP BY o.tenant_id ORDER BY o.tenant_id",
        tenants,
    )
    assert [tuple(row) for row in lines_by_tenant] == [(t, 24, 0) for t in tenants]


async def test_orders_over_two_products_in_opposite_orders_all_succeed_without_deadlock(http, db, tenant):
    a, b = await add_product(db, tenant, stock=1000), await add_product(db, tenant, stock=1000)
    calls = [
        order_with(http, tenant, lines((a, 1), (b, 2)) if i % 2 else lines((b, 2), (a, 1)))
        for i in range(100)
    ]
    responses = await gather(calls)
    assert [r.status_code for r in responses].count(201) == 100, [
        r.text for r in responses if r.status_code != 201
    ]
    assert (await stock_of(db, a), await stock_of(db, b)) == (900, 800)


async def test_orders_of_either_or_both_of_two_products_and_cancels_of_both_at_once_never_deadlock(
    http, db, tenant
):
    """Orders of one, the other or both of two products (both listed either way round), placed several per
    transaction (db.Database.batched: one order's product, then another's), while earlier orders of both are
    cancelled (each cancel gives both back, locking two rows): every request succeeds, none waits on another
    for good (a deadlock is broken off after a second, as a 409), and the stock is what was bought and given
    back."""
    a, b = await add_product(db, tenant, stock=1000), await add_product(db, tenant, stock=1000)
    kept = [(await order_with(http, tenant, lines((a, 1), (b, 1)))).json()["id"] for _ in range(20)]
    kinds = [lines((a, 1)), lines((b, 2)), lines((b, 2), (a, 1)), lines((a, 1), (b, 2))]
    buys = [order_with(http, tenant, kinds[i % 4]) for i in range(120)]
    cancels = [cancel(http, tenant, order_id) for order_id in kept]
    responses = await gather([*buys, *cancels])
    assert [r.status_code for r in responses] == [201] * 120 + [200] * 20, [
        r.text for r in responses if r.status_code not in (200, 201)
    ]
    assert (await stock_of(db, a), await stock_of(db, b)) == (1000 - 90, 1000 - 180)


async def test_restocks_purchases_and_cancels_at_once_leave_start_plus_restocks_minus_sold(http, db, tenant):
    product = await add_product(db, tenant, stock=20)
    kept = [(await order_with(http, tenant, lines((product, 1)))).json()["id"] for _ in range(10)]
    assert await stock_of(db, product) == 10

    async def restock() -> None:  # concurrent restocks from another connection, 5 units each
        await db.execute("UPDATE products SET stock = stock + 5 WHERE id = $1", uuid.UUID(product))

    buys = [order_with(http, tenant, lines((product, 2))) for _ in range(30)]
    cancels = [cancel(http, tenant, order_id) for order_id in kept]
    results = await asyncio.gather(*buys, *cancels, *(restock() for _ in range(8)))
    responses = [r for r in results if isinstance(r, httpx.Response)]
    assert all(r.status_code in (200, 201, 409) for r in responses), [r.text for r in responses]
    bought = sum(2 for r in responses[:30] if r.status_code == 201)
    assert all(r.status_code == 200 for r in responses[30:])
    # start 20, 10 kept then given back, 8 restocks of 5, each successful buy takes 2
    assert await stock_of(db, product) == 20 + 8 * 5 - bought
    taken = await db.fetchval(
        "SELECT coalesce(sum(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id "
        "WHERE i.tenant_id = $1 AND o.tenant_id = $1 AND o.status <> 'cancelled'",
        tenant,
    )
    assert taken == bought


async def test_expired_reservations_are_cancelled_once_with_stock_back_from_several_processes(
    fresh_database_url, tenant
):
    async with (
        asyncpg.create_pool(fresh_database_url, min_size=1, max_size=4) as db,
        app_client(settings_for(fresh_database_url)) as api,
    ):
        a, b = await add_product(db, tenant, stock=100), await add_product(db, tenant, stock=100)
        ids = [(await order_with(api, tenant, lines((a, 1), (b, 2)))).json()["id"] for _ in range(30)]
        live = (await order_with(api, tenant, lines((a, 5)))).json()["id"]
        assert (await stock_of(db, a), await stock_of(db, b)) == (65, 40)
        await db.execute(
            "UPDATE orders SET reserved_until = now() - interval '1 second' WHERE id = ANY($1)",
            [uuid.UUID(i) for i in ids],
        )
        settings = settings_for(fresh_database_url, pool_max=2)
        pools = [await create_pool(settings, fresh_database_url) for _ in range(3)]
        try:
            counts = await asyncio.gather(*(expire_reservations(pool, 4) for pool in pools))
            assert await expire_reservations(pools[0], 4) == 0  # nothing left to expire
        finally:
            for pool in pools:
                await pool.close()
        assert sum(counts) == 30
        assert (await stock_of(db, a), await stock_of(db, b)) == (95, 100)
        rows = await db.fetch("SELECT id, status, version FROM orders WHERE tenant_id = $1", tenant)
        by_id = {str(r["id"]): (r["status"], r["version"]) for r in rows}
        assert all(by_id[i] == ("cancelled", 2) for i in ids) and by_id[live] == ("draft", 1)
        events = await db.fetch("SELECT order_id, payload FROM outbox WHERE tenant_id = $1", tenant)
        assert sorted(str(e["order_id"]) for e in events) == sorted(ids)
        assert {json.loads(e["payload"])["reason"] for e in events} == {"reservation_expired"}
        got = await api.get(f"/orders/{ids[0]}", headers=tenant_headers(tenant))
        assert got.json()["status"] == "cancelled" and len(got.json()["items"]) == 2

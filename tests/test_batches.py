"""Orders with items that wait at the same time are placed together: one transaction and one round trip for up
to ORDERS_STOCK_BATCH of them, each still placed or refused on its own (db.Database.batched)."""

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
from catalogue import add_product, lines, order_with, stock_of, waiting

from conftest import test_settings as settings_for
from support import app_client, assert_error, count_keys, wait_for

HANG_GUARD_S = 20


async def _transactions(db: asyncpg.Pool, *order_ids: str) -> list[str]:
    """The transaction that inserted each order (xmin), in the order given."""
    rows = await db.fetch(
        "SELECT id::text, xmin::text FROM orders WHERE id = ANY ($1::uuid[])",
        [uuid.UUID(i) for i in order_ids],
    )
    by_id = dict(rows)
    return [by_id[i] for i in order_ids]


async def _wait_together(
    http: httpx.AsyncClient, db: asyncpg.Pool, held: str, orders: list[tuple[str, list[dict[str, Any]]]]
) -> tuple[httpx.Response, list[httpx.Response]]:
    """With one runner: a first order of product `held` (of the first order's tenant), whose row a
    transaction elsewhere holds, keeps the runner waiting while `orders` (tenant, lines) arrive one after
    another; then the row is let go. The first order's response, and theirs."""
    blocker = await db.acquire()
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", uuid.UUID(held))
        first = asyncio.ensure_future(order_with(http, orders[0][0], lines((held, 1))))
        # The runner waits on the row, with the first order.
        await wait_for(lambda: waiting(db, 1, queue=False))
        arrived = []
        for tenant, items in orders:
            arrived.append(asyncio.ensure_future(order_with(http, tenant, items)))
            await asyncio.sleep(0.05)  # in this order
        assert not any(w.done() for w in arrived)
        await tx.commit()
        async with asyncio.timeout(HANG_GUARD_S):
            return await first, list(await asyncio.gather(*arrived))
    finally:
        await db.release(blocker)


async def test_orders_waiting_together_are_placed_in_one_transaction_each_all_or_none(
    database_url, db, tenant
):
    """One runner, held by an order of a row locked elsewhere; three orders of one tenant and one of another
    arrive meanwhile. Once the row is free, the four run as one transaction in arrival order, each statement
    on its own tenant's rows: the first, third and fourth are placed, the second (more than is left after the
    first) is refused with what was available after the first, its key unused."""
    other = f"{tenant}-other"
    held, p, q = [await add_product(db, tenant, stock=s) for s in (5, 3, 10)]
    r = await add_product(db, other, stock=10)
    async with app_client(settings_for(database_url, pool_stock_writers=1, stock_batch=8)) as http:
        placed_first, (a, b, d, c) = await _wait_together(
            http,
            db,
            held,
            [
                (tenant, lines((p, 1), (q, 1))),
                (tenant, lines((p, 5))),
                (other, lines((r, 2))),
                (tenant, lines((q, 2), (p, 1))),
            ],
        )
    assert [x.status_code for x in (placed_first, a, c, d)] == [201] * 4
    body = assert_error(b, 409, "conflict", reason="insufficient_stock")
    assert body["details"]["items"] == [{"productId": p, "requested": 5, "available": 2}]
    assert (await stock_of(db, p), await stock_of(db, q), await stock_of(db, r)) == (1, 7, 8)
    xa, xc, xd, xfirst = await _transactions(
        db, a.json()["id"], c.json()["id"], d.json()["id"], placed_first.json()["id"]
    )
    assert xa == xc == xd != xfirst
    assert d.json()["tenantId"] == other and [i["productId"] for i in d.json()["items"]] == [r]
    owners = await db.fetch(
        "SELECT o.tenant_id AS o, i.tenant_id AS i FROM orders o JOIN order_items i ON i.order_id = o.id "
        "WHERE o.id = $1",
        uuid.UUID(d.json()["id"]),
    )
    assert [(row["o"], row["i"]) for row in owners] == [(other, other)]
    assert await count_keys(db, tenant) == 3  # first, a and c: b's key is free for a retry
    assert await count_keys(db, other) == 1


async def test_a_batch_that_fails_on_one_order_is_undone_and_each_order_runs_alone(
    fresh_database_url, fresh_db
):
    """An error only one order of a batch meets (a trigger refusing one product's lines, as a constraint
    would) undoes the whole transaction; each order then runs alone: the others are placed, each in a
    transaction of its own, and the failing one gets its own answer, with nothing of it written."""
    tenant = "t-batch-fail"
    held, good, bad = [await add_product(fresh_db, tenant, stock=10) for _ in range(3)]
    await fresh_db.execute(
        f"""
        CREATE FUNCTION refuse_line() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.product_id = '{bad}' THEN
                RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation',
                    CONSTRAINT = 'orders_total_cents_check';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_line BEFORE INSERT ON order_items FOR EACH ROW EXECUTE FUNCTION refuse_line();
        """
    )
    async with app_client(settings_for(fresh_database_url, pool_stock_writers=1)) as http:
        orders = [(tenant, lines((good, 1))), (tenant, lines((bad, 1))), (tenant, lines((good, 2)))]
        first, (a, x, c) = await _wait_together(http, fresh_db, held, orders)
    assert first.status_code == 201
    assert (a.status_code, c.status_code) == (201, 201)
    assert x.status_code == 422 and "totalCents" in x.json()["message"], x.text  # the constraint's answer
    assert (await stock_of(fresh_db, good), await stock_of(fresh_db, bad)) == (7, 10)
    xa, xc = await _transactions(fresh_db, a.json()["id"], c.json()["id"])
    assert xa != xc
    assert await fresh_db.fetchval("SELECT count(*) FROM orders WHERE tenant_id = $1", tenant) == 3
    assert await count_keys(fresh_db, tenant) == 3

"""Creates of the same products queue one at a time in the database, and a create renders its lines from
the products as last seen, which the statement checks: a change in between is sold as it now is, never as it
was."""

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from asyncpg.transaction import Transaction
from catalogue import add_product, lines, order_with, stock_of, waiting

from orders_svc.queries import orders
from orders_svc.queries.orders import LineRow, OrderRow, Placement

from conftest import test_settings as settings_for
from helpers import tenant_headers
from support import app_client, assert_error, count_keys, count_orders, wait_for

WAIT_MS = 300
HANG_GUARD_S = 30  # only turns a hang into a failure, never measures the wait


async def test_a_product_changed_since_the_last_order_is_sold_at_its_new_price_and_name(client, tenant, db):
    product = await add_product(db, tenant, stock=10, price=100, name="Old")
    first = (await order_with(client, tenant, lines((product, 1)))).json()
    await db.execute(
        "UPDATE products SET price_cents = 150, name = 'New', sku = 'SKU-NEW' WHERE id = $1",
        uuid.UUID(product),
    )
    response = await order_with(client, tenant, lines((product, 2)))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (first["totalCents"], body["totalCents"]) == (100, 300)
    [item] = body["items"]
    assert (item["name"], item["sku"], item["unitPriceCents"]) == ("New", "SKU-NEW", 150)
    stored = await db.fetchrow("SELECT * FROM order_items WHERE order_id = $1", uuid.UUID(body["id"]))
    assert (stored["name"], stored["unit_price_cents"], stored["quantity"]) == ("New", 150, 2)
    replay = await client.get(f"/orders/{body['id']}", headers=tenant_headers(tenant))
    assert replay.json() == body
    assert await stock_of(db, product) == 7 and await count_orders(db, tenant) == 2


async def test_a_product_changed_while_a_create_waits_for_its_row_is_sold_at_its_new_price(
    client, tenant, db
):
    """The statement reads each product as it locks it: an edit that held the row while the create waited
    (edits do not queue) is what the create sees once the edit commits, never the version from before."""
    product = await add_product(db, tenant, stock=10, price=100, name="Old")
    assert (await order_with(client, tenant, lines((product, 1)))).status_code == 201  # seen at 100
    async with db.acquire() as editor:
        edit = editor.transaction()
        await edit.start()
        await editor.execute(
            "UPDATE products SET price_cents = 170, name = 'New', version = version + 1 WHERE id = $1",
            uuid.UUID(product),
        )
        create = asyncio.ensure_future(order_with(client, tenant, lines((product, 2))))
        await wait_for(lambda: waiting(db, 1, queue=False))  # the create waits on the edit's transaction
        await edit.commit()
    async with asyncio.timeout(HANG_GUARD_S):
        response = await create
    assert response.status_code == 201, response.text
    body = response.json()
    [item] = body["items"]
    assert (item["name"], item["unitPriceCents"], body["totalCents"]) == ("New", 170, 340)
    stored = await db.fetchrow("SELECT * FROM order_items WHERE order_id = $1", uuid.UUID(body["id"]))
    assert (stored["name"], stored["unit_price_cents"], stored["quantity"]) == ("New", 170, 2)
    assert await stock_of(db, product) == 7 and await count_orders(db, tenant) == 2


async def test_a_product_withdrawn_since_the_last_order_is_409_inactive_and_changes_nothing(
    client, tenant, db
):
    product = await add_product(db, tenant, stock=10)
    assert (await order_with(client, tenant, lines((product, 1)))).status_code == 201
    await db.execute("UPDATE products SET active = false WHERE id = $1", uuid.UUID(product))
    response = await order_with(client, tenant, lines((product, 1)), key="k")
    body = assert_error(response, 409, "conflict", reason="product_inactive")
    assert body["details"]["productId"] == product
    assert await stock_of(db, product) == 9 and await count_orders(db, tenant) == 1
    assert await count_keys(db, tenant) == 1  # the refused create left its key unused


async def test_a_sold_out_product_seen_before_is_409_with_what_is_available(client, tenant, db):
    product = await add_product(db, tenant, stock=3)
    assert (await order_with(client, tenant, lines((product, 1)))).status_code == 201
    response = await order_with(client, tenant, lines((product, 5)))
    body = assert_error(response, 409, "conflict", reason="insufficient_stock")
    assert body["details"]["items"] == [{"productId": product, "requested": 5, "available": 2}]
    assert await stock_of(db, product) == 2


async def hold_products(conn: asyncpg.Connection, tenant: str, product: str) -> Transaction:
    """A create of one unit of `product` in an open transaction: it holds the product's queue and row."""
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads)
    line = await conn.fetchrow(
        "SELECT id, sku, name, price_cents, active FROM products WHERE id = $1", uuid.UUID(product)
    )
    assert line is not None
    now = datetime.now(UTC)
    until = now + timedelta(hours=1)
    order = OrderRow(uuid.uuid4(), tenant, "draft", 1, line["price_cents"], now, now, until)
    tx = conn.transaction()
    await tx.start()
    placement = Placement(("held", b"\x00", timedelta(hours=1)), ({}, b"{}"), order, [(LineRow(*line), 1)])
    placed = await orders.create_order_with_items(conn, placement)
    assert placed.claimed
    return tx


async def test_a_create_queued_past_the_wait_behind_another_create_of_its_product_is_409_in_progress(
    database_url, db, tenant
):
    """Waiting behind a create of the same product that does not end is bounded as a wait on a row is: 409
    request_in_progress, the key unused and the stock untouched; once that create ends, the retry goes
    through."""
    product = await add_product(db, tenant, stock=5)
    async with app_client(settings_for(database_url, idempotency_wait_ms=WAIT_MS)) as http:
        assert (await order_with(http, tenant, lines((product, 1)))).status_code == 201  # seen: no read first
        blocker = await asyncpg.connect(database_url)
        try:
            tx = await hold_products(blocker, tenant, product)
            async with asyncio.timeout(HANG_GUARD_S):
                responses = await asyncio.gather(
                    *(order_with(http, tenant, lines((product, 1)), key=f"k{i}") for i in range(3))
                )
            for response in responses:
                assert_error(response, 409, "conflict", reason="request_in_progress")
                assert response.headers["retry-after"].isdigit()
            assert await stock_of(db, product) == 4 and await count_keys(db, tenant) == 1
            await tx.rollback()
            retry = await order_with(http, tenant, lines((product, 1)), key="k0")
            assert retry.status_code == 201, retry.text
        finally:
            await blocker.close()
    assert await stock_of(db, product) == 3 and await count_orders(db, tenant) == 2


async def test_buyers_queued_behind_a_create_all_go_through_once_it_commits(database_url, db, tenant):
    product = await add_product(db, tenant, stock=20)
    # Runners for all eight, each order alone, so that all of them reach PostgreSQL's queue (with fewer, the
    # rest wait in the service: test_database_bounds.py; placed together: test_batches.py).
    async with app_client(settings_for(database_url, pool_stock_writers=8, stock_batch=1)) as http:
        blocker = await asyncpg.connect(database_url)
        try:
            tx = await hold_products(blocker, tenant, product)
            buyers = [asyncio.ensure_future(order_with(http, tenant, lines((product, 1)))) for _ in range(8)]
            # Each waits in the queue (the advisory lock), none on the product's row or another's transaction.
            await wait_for(lambda: waiting(db, 8, queue=True))
            assert await count_orders(db, tenant) == 0
            await tx.commit()
            async with asyncio.timeout(HANG_GUARD_S):
                responses = await asyncio.gather(*buyers)
        finally:
            await blocker.close()
    assert [r.status_code for r in responses] == [201] * 8
    assert await stock_of(db, product) == 20 - 9 and await count_orders(db, tenant) == 9


async def test_a_cancel_queued_past_the_wait_behind_a_create_of_its_product_is_409_in_progress(
    database_url, db, tenant
):
    """A cancel gives its stock back after the product's place in the creates' queue: held there past the
    wait, it is answered as a wait on a row is, 409 request_in_progress, the order still draft with its stock
    taken; once the queue moves, the retry cancels it."""
    product = await add_product(db, tenant, stock=5)
    async with app_client(settings_for(database_url, idempotency_wait_ms=WAIT_MS)) as http:
        placed = await order_with(http, tenant, lines((product, 2)))
        assert placed.status_code == 201
        order_id = placed.json()["id"]
        blocker = await asyncpg.connect(database_url)
        try:
            async with blocker.transaction():
                await blocker.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('orders_products'), uuid_hash($1))",
                    uuid.UUID(product),
                )
                async with asyncio.timeout(HANG_GUARD_S):
                    refused = await http.post(f"/orders/{order_id}/cancel", headers=tenant_headers(tenant))
                assert_error(refused, 409, "conflict", reason="request_in_progress")
                assert await stock_of(db, product) == 3
                status = await db.fetchval("SELECT status FROM orders WHERE id = $1", uuid.UUID(order_id))
                assert status == "draft"
        finally:
            await blocker.close()
        again = await http.post(f"/orders/{order_id}/cancel", headers=tenant_headers(tenant))
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert await stock_of(db, product) == 5

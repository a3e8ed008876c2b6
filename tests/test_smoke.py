from helpers import close, confirm, create


async def test_lifecycle_create_confirm_close(client, tenant, db):
    created = await create(client, tenant)
    assert created.status_code == 201
    order_id = created.json()["id"]
    confirmed = await confirm(client, tenant, order_id, total=1234)
    assert confirmed.status_code == 200
    assert confirmed.json()["version"] == 2
    closed = await close(client, tenant, order_id)
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed"
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE order_id = $1", closed.json()["id"]) == 1

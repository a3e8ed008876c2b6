"""Every event type the service writes reaches the broker on the subject of its name, in per-order order."""

import uuid
from datetime import timedelta
from pathlib import Path

from nats_support import NatsServer, relay_until_published

from conftest import free_port
from conftest import test_settings as settings_for
from helpers import cancel, confirmed_id, create_id


async def test_a_cancelled_order_is_published_on_orders_cancelled(
    fresh_client, fresh_db, fresh_database_url, tenant, tmp_path: Path
):
    draft = await create_id(fresh_client, tenant)
    confirmed = await confirmed_id(fresh_client, tenant)
    cancelled = {
        draft: (await cancel(fresh_client, tenant, draft, {"reason": "duplicate"})).json(),
        confirmed: (await cancel(fresh_client, tenant, confirmed)).json(),
    }
    server = NatsServer(free_port(), tmp_path / "jetstream", tmp_path / "nats.log")
    server.start()
    try:
        ms = timedelta(milliseconds=1)
        settings = settings_for(
            fresh_database_url, nats_url=server.url, relay_poll_interval=50 * ms, relay_backoff_base=10 * ms
        )
        messages = await relay_until_published(settings, fresh_database_url, fresh_db, server.url)
    finally:
        server.stop()
    assert sorted(m.subject for m in messages) == ["orders.cancelled", "orders.cancelled"]
    for message in messages:
        order = cancelled[message.data["orderId"]]
        assert message.data == {
            "orderId": order["id"],
            "tenantId": tenant,
            "reason": "duplicate" if order["id"] == draft else None,
            "cancelledAt": order["updatedAt"],
        }
        assert message.headers["Orders-Event-Type"] == "orders.cancelled"
        row = await fresh_db.fetchrow("SELECT id FROM outbox WHERE order_id = $1", uuid.UUID(order["id"]))
        assert message.headers["Nats-Msg-Id"] == str(row["id"])

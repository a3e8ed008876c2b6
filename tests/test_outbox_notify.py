"""The outbox NOTIFY is edge-triggered: a commit wakes the relays when it makes the queue non-empty.

PostgreSQL serialises the commits of notifying transactions, so notifying on every close would throttle closes
under load. While events are pending a relay is draining them (or polling), so there is no one to wake.
"""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from orders_svc.queries import statement


async def _insert_event(conn: asyncpg.Connection, **columns: object) -> uuid.UUID:
    event_id = uuid.uuid4()
    names = ["id", "event_type", "order_id", "order_version", "tenant_id", "payload", *columns]
    values = [event_id, "orders.closed", uuid.uuid4(), 3, "t", "{}", *columns.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await conn.execute(f"INSERT INTO outbox ({', '.join(names)}) VALUES ({placeholders})", *values)
    return event_id


async def _notifications_after(fresh_database_url: str, action) -> int:
    received: list[str] = []
    listener = await asyncpg.connect(fresh_database_url)
    writer = await asyncpg.connect(fresh_database_url)
    try:
        await listener.add_listener("orders_outbox", lambda *args: received.append(args[2]))
        await action(writer)
        await listener.execute("SELECT 1")  # a round trip delivers any pending notification
        await asyncio.sleep(0)
    finally:
        await listener.close()
        await writer.close()
    return len(received)


async def test_an_event_inserted_into_an_idle_outbox_notifies(fresh_database_url):
    assert await _notifications_after(fresh_database_url, _insert_event) == 1


async def test_an_event_inserted_behind_pending_events_does_not_notify(fresh_database_url):
    async def behind_pending(conn):
        await _insert_event(conn)  # the outbox was idle: this one notifies
        await _insert_event(conn)  # behind a pending event: this one does not

    assert await _notifications_after(fresh_database_url, behind_pending) == 1


async def test_published_and_dead_events_do_not_count_as_pending(fresh_database_url):
    async def after_settled(conn):
        await _insert_event(conn)  # idle outbox: notifies
        await conn.execute("UPDATE outbox SET published_at = now()")
        await _insert_event(conn, dead_at=datetime.now(UTC))  # only a published event before it: notifies
        await _insert_event(conn)  # only published and dead events before it: notifies

    assert await _notifications_after(fresh_database_url, after_settled) == 3


async def test_an_event_behind_one_that_waits_out_a_backoff_notifies(fresh_database_url):
    # Nobody drains an event that is backing off: relays sleep until their poll, so the new one wakes them.
    async def behind_backoff(conn):
        await _insert_event(conn, next_attempt_at=datetime.now(UTC) + timedelta(minutes=5))  # idle: notifies
        await _insert_event(conn)  # the only older pending event is not due: notifies

    assert await _notifications_after(fresh_database_url, behind_backoff) == 2


async def test_an_inserting_transaction_holds_its_writer_lock_until_it_commits(fresh_database_url):
    # What a relay about to go idle waits for (sql/outbox.sql, wait_for_outbox_writers).
    writer = await asyncpg.connect(fresh_database_url)
    relay = await asyncpg.connect(fresh_database_url)
    try:
        transaction = writer.transaction()
        await transaction.start()
        await _insert_event(writer)
        await _insert_event(writer)  # behind a pending event: no NOTIFY, the lock is held all the same
        waiting = asyncio.ensure_future(relay.fetchval(statement("wait_for_outbox_writers")))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await transaction.commit()
        assert await asyncio.wait_for(waiting, 10) == 1
        assert await relay.fetchval(statement("wait_for_outbox_writers")) == 0  # nobody inserting now
    finally:
        await writer.close()
        await relay.close()


async def test_the_pending_check_reads_the_front_of_an_index_however_long_the_backlog(fresh_database_url):
    # The same SELECT as the trigger's, over a backlog the statistics have not seen yet (no ANALYZE):
    # an ordered index scan that stops at the first entry, never a scan and sort of the whole backlog.
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, payload) "
            "SELECT gen_random_uuid(), 'orders.closed', gen_random_uuid(), 3, 't', '{}' "
            "FROM generate_series(1, 20000)"
        )
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) SELECT created_at, next_attempt_at FROM outbox "
            "WHERE published_at IS NULL AND dead_at IS NULL ORDER BY created_at, id LIMIT 1"
        )
    finally:
        await conn.close()
    plan = "\n".join(r[0] for r in rows)
    assert "outbox_pending_idx" in plan, plan
    assert "Sort" not in plan, plan
    assert "Bitmap" not in plan, plan


async def test_the_trigger_reads_one_index_entry_even_when_planned_while_the_outbox_was_empty(
    fresh_database_url,
):
    # A session plans the trigger's check on its first event and keeps that plan until the statistics of
    # outbox change. Planned just after an ANALYZE of an empty outbox (a fresh deployment, a purge, a drained
    # relay), the check must still read the front of the index once a backlog has grown behind the statistics,
    # not the whole outbox on every event written.
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute("ALTER TABLE outbox SET (autovacuum_enabled = false)")  # no ANALYZE mid-test
        await conn.execute("VACUUM ANALYZE outbox")
        await _insert_event(conn)  # the session plans the check here, for an outbox of (about) no rows
        await conn.execute(
            "INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, payload) "
            "SELECT gen_random_uuid(), 'orders.closed', gen_random_uuid(), 3, 't', '{}' "
            "FROM generate_series(1, 5000)"
        )
        async with conn.transaction():
            await _insert_event(conn)
            read = await conn.fetchrow(
                "SELECT seq_tup_read, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'outbox'"
            )
    finally:
        await conn.close()
    assert read["seq_tup_read"] == 0, dict(read)
    assert read["idx_scan"] >= 1, dict(read)

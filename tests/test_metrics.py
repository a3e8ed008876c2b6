"""GET /metrics: each family's values after known traffic, route templates as labels, the outbox backlog,
the token, and the sums of several worker processes."""

import asyncio
import uuid

import httpx
import pytest
from payment_helpers import KEY, deliver, paid_order, settlement
from prometheus_client import REGISTRY

from orders_svc.db import Database, connection, create_pool
from orders_svc.observability import metrics

from conftest import test_settings as settings_for
from helpers import close, confirmed_id, create, create_id, tenant_headers
from metrics_support import parse, scrape, value
from servers import serving
from support import app_client

DURATION = "http_server_request_duration_seconds_count"


def requests(samples, method: str, route: str, status: int) -> float:
    labels = {"http_request_method": method, "http_route": route, "http_response_status_code": str(status)}
    return value(samples, DURATION, **labels)


async def test_requests_are_counted_under_their_route_template_never_their_path(client, tenant):
    order_id = await create_id(client, tenant)
    before = await scrape(client)
    for _ in range(3):
        assert (await client.get(f"/orders/{order_id}", headers=tenant_headers(tenant))).status_code == 200
    missing = await client.get(f"/orders/{uuid.uuid4()}", headers=tenant_headers(tenant))
    assert missing.status_code == 404
    response = await client.get("/metrics")
    after = parse(response.text)
    assert (
        requests(after, "GET", "/orders/{order_id}", 200) - requests(before, "GET", "/orders/{order_id}", 200)
        == 3
    )
    assert (
        requests(after, "GET", "/orders/{order_id}", 404) - requests(before, "GET", "/orders/{order_id}", 404)
        == 1
    )
    assert order_id not in response.text
    buckets = [
        s for (name, labels), s in after.items() if name == "http_server_request_duration_seconds_bucket"
    ]
    assert buckets, "the histogram has buckets"
    assert 'le="0.005"' in response.text and 'le="10.0"' in response.text


async def test_unknown_routes_and_methods_collapse_to_one_label_value(client):
    before = await scrape(client)
    for path in ("/nope", "/orders/x/y/z", f"/{uuid.uuid4()}"):
        assert (await client.get(path)).status_code == 404
    assert (await client.request("BREW", "/orders")).status_code == 405
    after = await scrape(client)
    assert requests(after, "GET", "unknown", 404) - requests(before, "GET", "unknown", 404) == 3
    assert requests(after, "_OTHER", "/orders", 405) - requests(before, "_OTHER", "/orders", 405) == 1
    routes = {dict(labels)["http_route"] for (name, labels) in after if name == DURATION}
    assert all(route == "unknown" or route.startswith("/") for route in routes)
    assert not any(str(part) in route for route in routes for part in ("nope", "/x/y"))


async def test_active_requests_counts_the_scrape_itself(client):
    assert value(await scrape(client), "http_server_active_requests") == 1


async def test_idempotency_outcomes_are_counted(client, tenant):
    name = "orders_idempotency_requests_total"
    before = await scrape(client)
    key = uuid.uuid4().hex
    assert (await create(client, tenant, key)).status_code == 201
    assert (await create(client, tenant, key)).status_code == 200  # replayed (the stored answer, as 200)
    assert (await create(client, tenant, key, {"tenantId": tenant})).status_code == 409  # another body
    after = await scrape(client)
    for outcome, count in (("created", 1), ("replayed", 1), ("reused", 1)):
        assert value(after, name, outcome=outcome) - value(before, name, outcome=outcome) == count, outcome


async def test_state_transitions_are_counted_by_from_and_to(client, tenant):
    name = "orders_state_transitions_total"
    before = await scrape(client)
    order_id = await confirmed_id(client, tenant)
    assert (await close(client, tenant, order_id)).status_code == 200
    assert (await close(client, tenant, order_id)).status_code == 409  # refused: no transition
    draft = await create_id(client, tenant)
    assert (await client.post(f"/orders/{draft}/cancel", headers=tenant_headers(tenant))).status_code == 200
    after = await scrape(client)
    for source, target in (
        ("draft", "confirmed"),
        ("confirmed|paid", "closed"),
        ("draft|confirmed", "cancelled"),
    ):
        delta = value(after, name, from_state=source, to_state=target) - value(
            before, name, from_state=source, to_state=target
        )
        assert delta == 1, (source, target)


async def test_a_webhooks_settlements_are_counted_as_the_state_changes_they_make(database_url, db, tenant):
    """A success moves its confirmed order to paid, a failure cancels it: both are the API's state changes."""
    name = "orders_state_transitions_total"
    changes = (("confirmed", "paid"), ("draft|confirmed", "cancelled"))
    async with app_client(settings_for(database_url, webhook_secrets=(KEY,))) as client:
        _, succeeded, _ = await paid_order(client, db, tenant)
        _, failed, _ = await paid_order(client, db, tenant)
        before = await scrape(client)
        assert (await deliver(client, settlement(succeeded))).status_code == 200
        failure = settlement(failed, "failed", failureReason="card_declined")
        assert (await deliver(client, failure)).status_code == 200
        after = await scrape(client)
    for source, target in changes:
        delta = value(after, name, from_state=source, to_state=target) - value(
            before, name, from_state=source, to_state=target
        )
        assert delta == 1, (source, target)


async def test_the_pool_is_described_at_scrape_time(app, client):
    async with connection(app.state.pool):  # one in use while scraped (recorded before the outbox read)
        samples = await scrape(client)
    assert value(samples, "db_client_connection_max") == 20  # test_settings' pool_max
    used = value(samples, "db_client_connection_count", db_client_connection_state="used")
    idle = value(samples, "db_client_connection_count", db_client_connection_state="idle")
    assert used == 1
    assert idle >= 0 and used + idle <= 20
    assert value(samples, "db_client_connection_pending_requests") == 0
    assert value(samples, "db_client_connection_wait_time_seconds_count") > 0


async def test_waiting_for_a_turn_is_measured(database_url):
    settings = settings_for(database_url, pool_min=1, pool_max=1)
    pool: Database = await create_pool(settings, database_url)
    try:
        count = REGISTRY.get_sample_value("db_client_connection_wait_time_seconds_count")
        async with connection(pool):
            waiter = asyncio.ensure_future(_hold(pool))
            while pool.usage().pending == 0:
                await asyncio.sleep(0.01)
            assert pool.usage() == metrics.PoolUsage(used=1, idle=0, max=1, pending=1)
        await waiter
        assert REGISTRY.get_sample_value("db_client_connection_wait_time_seconds_count") == count + 2
        assert pool.usage().pending == 0
    finally:
        await pool.close()


async def _hold(pool: Database) -> None:
    async with connection(pool):
        pass


async def test_the_outbox_backlog_is_read_from_the_database(fresh_database_url, fresh_db):
    async with app_client(settings_for(fresh_database_url)) as http:
        tenant = "t-outbox"
        empty = await scrape(http)
        assert value(empty, "orders_outbox_pending_events") == 0
        assert value(empty, "orders_outbox_oldest_pending_age_seconds") == 0
        for _ in range(2):
            order_id = await confirmed_id(http, tenant)
            assert (await close(http, tenant, order_id)).status_code == 200
        await fresh_db.execute(
            "UPDATE outbox SET dead_at = now(), created_at = now() - interval '1 hour' "
            "WHERE id = (SELECT id FROM outbox ORDER BY created_at LIMIT 1)"
        )
        await fresh_db.execute(
            "UPDATE outbox SET created_at = now() - interval '1 minute' WHERE dead_at IS NULL"
        )
        await asyncio.sleep(metrics.OUTBOX_CACHE_SECONDS)  # past the cache of the empty backlog
        samples = await scrape(http)
        assert value(samples, "orders_outbox_pending_events") == 1
        assert value(samples, "orders_outbox_dead_events") == 1
        assert 60 <= value(samples, "orders_outbox_oldest_pending_age_seconds") < 3600


async def test_the_metrics_token_is_required_when_set(database_url):
    async with app_client(settings_for(database_url, metrics_token="s3cret")) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = await http.get("/metrics", headers=headers)
            assert response.status_code == 401
            assert response.json()["code"] == "unauthorized"
        assert (await http.get("/metrics", headers={"Authorization": "Bearer s3cret"})).status_code == 200


async def test_metrics_off_records_no_requests(database_url, tenant):
    async with app_client(settings_for(database_url, metrics=False)) as http:
        try:
            before = await scrape(http)
            await create_id(http, tenant)
            after = await scrape(http)
        finally:
            metrics.state.enabled = True
    assert requests(after, "POST", "/orders", 201) == requests(before, "POST", "/orders", 201)
    assert "orders_outbox_pending_events" in {name for name, _ in after}


@pytest.mark.slow
def test_two_worker_processes_add_up(database_url, tmp_path):
    """`serve --workers 2`: whichever worker answers the scrape, it reports both workers' counts."""
    with serving(database_url, tmp_path / "server.log", ORDERS_WORKERS="2", ORDERS_POOL_MAX="3") as base:
        tenant = f"t-{uuid.uuid4().hex[:12]}"
        sent = 40
        for _ in range(sent):  # a connection each: the kernel hands them to either worker
            with httpx.Client(base_url=base) as http:
                assert http.get("/orders", headers=tenant_headers(tenant)).status_code == 200
        for _ in range(8):
            with httpx.Client(base_url=base) as http:
                samples = parse(http.get("/metrics").text)
            assert requests(samples, "GET", "/orders", 200) == sent
            # Each live worker records its pool of 3: both wrote to the shared files.
            assert value(samples, "db_client_connection_max") == 6


def test_a_loop_counter_is_exposed_as_prometheus_clients_counter_would_be():
    """The same increments, label set by label set, give the same exposition text (`_created` aside)."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    registries = CollectorRegistry(), CollectorRegistry()
    theirs = Counter("c", "Things done", ("outcome", "kind"), registry=registries[0])
    ours = metrics.LoopCounter("c", "Things done", ("outcome", "kind"), registry=registries[1])
    for labels, times in {("created", "a"): 3, ("replayed", "b"): 1, ("created", "b"): 2}.items():
        inc = ours.child(*labels)
        for _ in range(times):
            inc()
            theirs.labels(*labels).inc()

    def text(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert text(registries[1]) == text(registries[0])
    assert 'c_total{kind="a",outcome="created"} 3.0' in text(registries[1])


def test_a_loop_histogram_exposes_what_prometheus_clients_histogram_would():
    """The same observations (below, on and above bucket bounds, and past the last) give the same buckets,
    count and sum as the library's Histogram, label set by label set (its `_created` aside)."""
    from prometheus_client import CollectorRegistry, Histogram

    buckets = (0.005, 0.01, 1, 10)
    theirs = Histogram("h", "h", ("route",), buckets=buckets, registry=CollectorRegistry())
    ours = metrics.LoopHistogram("h", "h", ("route",), buckets, registry=CollectorRegistry())
    for route, values in {"/a": [0.0, 0.005, 0.0051, 1, 9.99, 10, 11], "/b": [0.01]}.items():
        observe = ours.child(route)
        for v in values:
            observe(v)
            theirs.labels(route).observe(v)

    def samples(families: object) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for family in families  # type: ignore[attr-defined]
            for s in family.samples
            if not s.name.endswith("_created")
        }

    assert samples(ours.collect()) == samples(theirs.collect())
    assert ("h_bucket", (("le", "0.005"), ("route", "/a")), 2.0) in samples(ours.collect())

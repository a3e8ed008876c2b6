"""Per-tenant rate limits: token buckets for writes and reads, RateLimit fields, 429 rate_limited that changes
nothing and reaches no database, tenants apart."""

import uuid

import pytest

from orders_svc.observability.limits import Policy
from orders_svc.settings import Rate, Settings, SettingsError

from conftest import drop_database
from conftest import test_settings as settings_for
from helpers import create, create_id, tenant_headers
from metrics_support import scrape, value
from support import app_client, count_keys, count_orders


def writes(requests: int, seconds: int = 60, burst: int | None = None, **extra: object) -> dict[str, object]:
    return {"rate_limit_writes": Rate(requests, seconds, burst or requests), **extra}


async def test_writes_past_the_limit_get_429_and_change_nothing(database_url, db, tenant):
    async with app_client(settings_for(database_url, **writes(2))) as http:
        first, second = await create(http, tenant), await create(http, tenant)
        assert (first.status_code, second.status_code) == (201, 201)
        assert first.headers["ratelimit-policy"] == '"writes";q=2;w=60'
        assert first.headers["ratelimit"] == '"writes";r=1;t=30'
        assert second.headers["ratelimit"] == '"writes";r=0;t=60'
        limited = await create(http, tenant, key="k-limited")
    assert limited.status_code == 429
    assert limited.json() == {
        "code": "rate_limited",
        "message": "rate limit of this tenant's writes exceeded; retry after Retry-After seconds",
        "details": {"policy": "writes"},
    }
    assert limited.headers["retry-after"] == "30"
    assert limited.headers["ratelimit"] == '"writes";r=0;t=60'
    assert limited.headers["ratelimit-policy"] == '"writes";q=2;w=60'
    assert "x-request-id" in limited.headers
    assert await count_orders(db, tenant) == 2
    assert await count_keys(db, tenant) == 2  # the limited request's key was never claimed


async def test_tenants_do_not_share_a_bucket(database_url):
    a, b = f"t-{uuid.uuid4().hex[:12]}", f"t-{uuid.uuid4().hex[:12]}"
    async with app_client(settings_for(database_url, **writes(1))) as http:
        assert (await create(http, a)).status_code == 201
        assert (await create(http, a)).status_code == 429
        assert (await create(http, b)).status_code == 201
        assert (await create(http, b)).status_code == 429


async def test_reads_and_writes_have_their_own_policies(database_url, tenant):
    settings = settings_for(database_url, **writes(1), rate_limit_reads=Rate(2, 10, 2))
    async with app_client(settings) as http:
        order_id = await create_id(http, tenant)
        assert (await create(http, tenant)).status_code == 429  # writes used up; reads untouched
        path, headers = f"/orders/{order_id}", tenant_headers(tenant)
        first = await http.get(path, headers=headers)
        assert first.status_code == 200
        assert first.headers["ratelimit-policy"] == '"reads";q=2;w=10'
        assert first.headers["ratelimit"] == '"reads";r=1;t=5'
        assert (await http.head(path, headers=headers)).status_code == 200
        limited = await http.get(path, headers=headers)
        assert limited.status_code == 429 and limited.json()["details"] == {"policy": "reads"}
        assert limited.headers["retry-after"] == "5"


async def test_unset_policies_limit_nothing_and_add_no_fields(database_url, tenant):
    async with app_client(settings_for(database_url, **writes(1))) as http:
        order_id = await create_id(http, tenant)
        for _ in range(5):
            response = await http.get(f"/orders/{order_id}", headers=tenant_headers(tenant))
            assert response.status_code == 200
            assert "ratelimit" not in response.headers and "ratelimit-policy" not in response.headers
    async with app_client(settings_for(database_url)) as http:
        response = await create(http, tenant)
        assert response.status_code == 201 and "ratelimit" not in response.headers


async def test_operational_endpoints_are_not_limited(database_url):
    async with app_client(settings_for(database_url, rate_limit_reads=Rate(1, 60, 1))) as http:
        for _ in range(3):
            for path in ("/healthz", "/metrics", "/openapi.json"):
                response = await http.get(path)
                assert response.status_code == 200 and "ratelimit" not in response.headers


async def test_the_burst_is_the_bucket(database_url, tenant):
    async with app_client(settings_for(database_url, **writes(1, 60, burst=3))) as http:
        statuses = [(await create(http, tenant)).status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]


async def test_limited_requests_are_counted(database_url, tenant):
    async with app_client(settings_for(database_url, **writes(1))) as http:
        name = "orders_rate_limited_requests_total"
        before = value(await scrape(http), name, policy="writes")
        await create(http, tenant)
        await create(http, tenant)
        await create(http, tenant)
        assert value(await scrape(http), name, policy="writes") - before == 2


async def test_a_limited_request_never_reaches_the_database(admin_dsn, template_db, tenant):
    """With the database gone, an allowed request is a 503; a limited one is still a 429."""
    from conftest import clone

    name, dsn = clone(admin_dsn, template_db, "orders_limits")
    try:
        async with app_client(settings_for(dsn, **writes(1), pool_min=0)) as http:
            drop_database(admin_dsn, name)
            assert (await create(http, tenant)).status_code == 503
            limited = await create(http, tenant)
            assert limited.status_code == 429
    finally:
        drop_database(admin_dsn, name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_the_policy_rate():
    clock = Clock()
    policy = Policy("writes", Rate(10, 1, 10), clock)
    assert [policy.take("a")[0] for _ in range(11)] == [True] * 10 + [False]
    allowed, tokens = policy.take("a")
    assert not allowed and policy.retry_after(tokens) == 1
    clock.now += 0.25  # 2.5 tokens back
    assert [policy.take("a")[0] for _ in range(3)] == [True, True, False]
    clock.now += 10
    allowed, tokens = policy.take("a")
    assert allowed and tokens == 9  # refilled to the burst, never beyond
    assert policy.fields(tokens) == [
        (b"ratelimit-policy", b'"writes";q=10;w=1'),
        (b"ratelimit", b'"writes";r=9;t=1'),
    ]


def test_idle_tenants_buckets_are_dropped_once_many():
    clock = Clock()
    policy = Policy("reads", Rate(1, 1, 1), clock)
    policy.sweep_at = 3
    for tenant in ("a", "b", "c"):
        policy.take(tenant)
    clock.now += 5  # all refilled
    policy.take("d")
    assert set(policy._buckets) == {"d"}


@pytest.mark.parametrize(
    ("text", "rate"),
    [("100/1", Rate(100, 1, 100)), ("5/60", Rate(5, 60, 5)), ("10/1;burst=50", Rate(10, 1, 50))],
)
def test_rate_settings_are_read(text, rate):
    settings = Settings.from_env({"ORDERS_RATE_LIMIT_WRITES": text, "ORDERS_RATE_LIMIT_READS": text})
    assert settings.rate_limit_writes == rate and settings.rate_limit_reads == rate


@pytest.mark.parametrize("text", ["100", "0/1", "1/0", "a/b", "10/1;burst=0", "10/1;burst", "-1/1", "1.5/1"])
def test_bad_rates_are_refused_at_start_up(text):
    with pytest.raises(SettingsError, match="ORDERS_RATE_LIMIT_WRITES"):
        Settings.from_env({"ORDERS_RATE_LIMIT_WRITES": text})

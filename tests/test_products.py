"""/products: create (idempotent), get, keyset list with ?active=, PATCH with If-Match, stock changes."""

import asyncio
import uuid

import pytest
from product_helpers import (
    admin_headers,
    assert_product,
    change_stock,
    count_products,
    create_product,
    patch_product,
    product_body,
    product_id,
    product_row,
)

from support import BAD_KEYS, assert_error, count_keys, expire_key

MAX = 2**31 - 1


# ------------------------------------------------------------------------------------------- create
async def test_create_returns_201_with_location_etag_and_the_stored_product(client, tenant, db):
    response = await create_product(client, tenant, product_body(sku="MUG-1", stock=5, active=False))
    body = assert_product(response, 201, await product_row(db, response.json()["id"]))
    assert response.headers["location"] == f"/products/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert (body["tenantId"], body["sku"], body["stock"], body["active"], body["version"]) == (
        tenant,
        "MUG-1",
        5,
        False,
        1,
    )
    assert body["createdAt"] == body["updatedAt"]


async def test_create_without_stock_or_active_makes_an_active_product_with_no_stock(client, tenant, db):
    response = await create_product(client, tenant, {"sku": "s", "name": "n", "priceCents": 0})
    body = assert_product(response, 201, await product_row(db, response.json()["id"]))
    assert (body["stock"], body["active"], body["priceCents"]) == (0, True, 0)


async def test_a_create_retried_with_its_key_replays_and_creates_one_product(client, tenant, db):
    body = product_body()
    first = await create_product(client, tenant, body, key="p-1")
    retry = await create_product(client, tenant, body, key="p-1")
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content
    assert retry.headers["location"] == first.headers["location"]
    assert await count_products(db, tenant) == 1
    reused = await create_product(client, tenant, {**body, "name": "Other"}, key="p-1")
    assert_error(reused, 409, "conflict", reason="idempotency_key_reused")
    assert await count_products(db, tenant) == 1


async def test_concurrent_creates_with_one_key_create_one_product(client, tenant, db):
    body = product_body()
    responses = await asyncio.gather(*(create_product(client, tenant, body, key="same") for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, [r.text for r in responses]
    assert all(s in (200, 201, 409) for s in statuses), statuses
    assert await count_products(db, tenant) == 1


async def test_create_without_an_idempotency_key_returns_400(client, tenant, db):
    response = await client.post("/products", headers=admin_headers(tenant), json=product_body())
    assert_error(response, 400, "bad_request")
    assert await count_products(db, tenant) == 0


@BAD_KEYS
async def test_create_with_an_invalid_idempotency_key_returns_400(client, tenant, db, bad_key):
    assert_error(await create_product(client, tenant, key=bad_key), 400, "bad_request")
    assert await count_products(db, tenant) == 0


async def test_a_taken_sku_returns_409_sku_taken_and_does_not_use_up_the_key(client, tenant, db):
    await product_id(client, tenant, sku="TAKEN")
    taken = await create_product(client, tenant, product_body(sku="TAKEN"), key="k")
    body = assert_error(taken, 409, "conflict", reason="sku_taken")
    assert body["details"] == {"reason": "sku_taken"}
    assert await count_products(db, tenant) == 1 and await count_keys(db, tenant) == 1
    fresh = await create_product(client, tenant, product_body(sku="FREE"), key="k")
    assert_product(fresh, 201, await product_row(db, fresh.json()["id"]))


async def test_concurrent_creates_of_one_sku_make_one_product(client, tenant, db):
    body = product_body(sku="RACE")
    responses = await asyncio.gather(*(create_product(client, tenant, body) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["details"]["reason"] in ("sku_taken", "request_in_progress")
    assert await count_products(db, tenant) == 1


async def test_the_same_sku_in_two_tenants_makes_two_products(client, tenant, db):
    await product_id(client, tenant, sku="SHARED")
    await product_id(client, f"{tenant}-b", sku="SHARED")
    assert await count_products(db, tenant) == 1 and await count_products(db, f"{tenant}-b") == 1


async def test_an_expired_create_key_is_taken_over(client, tenant, db):
    assert (await create_product(client, tenant, key="k")).status_code == 201
    await expire_key(db, tenant, "k")
    second = await create_product(client, tenant, key="k")
    assert_product(second, 201, await product_row(db, second.json()["id"]))
    assert await count_products(db, tenant) == 2


@pytest.mark.parametrize(
    "fields",
    [
        {"sku": "A" * 64},
        {"sku": "a.b_c-9"},
        {"name": "x"},
        {"name": "é" * 200},
        {"priceCents": MAX},
        {"priceCents": 0},
        {"stock": MAX},
        {"stock": 0},
    ],
    ids=repr,
)
async def test_values_at_the_bounds_are_accepted(client, tenant, db, fields):
    response = await create_product(client, tenant, product_body(**fields))
    body = assert_product(response, 201, await product_row(db, response.json()["id"]))
    assert {k: body[k] for k in fields} == fields


@pytest.mark.parametrize(
    "fields",
    [
        {"sku": ""},
        {"sku": "A" * 65},
        {"sku": "has space"},
        {"sku": "a/b"},
        {"sku": "abc\n"},
        {"sku": "caf\u00e9"},
        {"sku": 7},
        {"name": ""},
        {"name": "x" * 201},
        {"name": "nul\u0000"},
        {"name": None},
        {"priceCents": -1},
        {"priceCents": MAX + 1},
        {"priceCents": 12.5},
        {"priceCents": "100"},
        {"stock": -1},
        {"stock": MAX + 1},
        {"stock": None},
        {"active": "yes"},
        {"active": None},
        {"colour": "blue"},
        {"tenantId": "x"},
    ],
    ids=repr,
)
async def test_a_body_out_of_bounds_or_of_the_wrong_shape_returns_422_and_creates_nothing(
    client, tenant, db, fields
):
    assert_error(await create_product(client, tenant, product_body(**fields)), 422, "validation_error")
    assert await count_products(db, tenant) == 0 and await count_keys(db, tenant) == 0


@pytest.mark.parametrize("missing", ["sku", "name", "priceCents"])
async def test_a_body_without_a_required_field_returns_422(client, tenant, db, missing):
    body = product_body()
    del body[missing]
    assert_error(await create_product(client, tenant, body), 422, "validation_error")
    assert await count_products(db, tenant) == 0


@pytest.mark.parametrize("content", [b"", b"{", b"not json", b'{"sku": "a",}'], ids=repr)
async def test_create_with_a_body_that_is_not_json_returns_400(client, tenant, db, content):
    headers = admin_headers(tenant, **{"Idempotency-Key": "k"})
    assert_error(await client.post("/products", headers=headers, content=content), 400, "bad_request")
    assert await count_products(db, tenant) == 0


# ------------------------------------------------------------------------------------------- get
async def test_get_returns_the_product_with_its_etag(client, tenant, db):
    pid = await product_id(client, tenant)
    response = await client.get(f"/products/{pid}", headers={"X-Tenant-Id": tenant})
    assert_product(response, 200, await product_row(db, pid))


@pytest.mark.parametrize("pid", [str(uuid.uuid4()), "not-a-uuid"])
async def test_get_of_a_missing_product_returns_404(client, tenant, pid):
    response = await client.get(f"/products/{pid}", headers={"X-Tenant-Id": tenant})
    body = assert_error(response, 404, "not_found")
    assert body["message"] == "product not found"


# ------------------------------------------------------------------------------------------- list
async def list_products(client, tenant, **params):
    return await client.get("/products", headers={"X-Tenant-Id": tenant}, params=params)


async def test_list_pages_newest_first_through_cursors(client, tenant):
    ids = [await product_id(client, tenant) for _ in range(5)]
    seen, cursor = [], None
    for _ in range(3):
        response = await list_products(client, tenant, limit=2, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert cursor is None


@pytest.mark.parametrize("active", ["true", "false"])
async def test_list_filters_on_active(client, tenant, active):
    wanted = active == "true"
    flags = [True, False, True, False, False, True, True]
    ids = [await product_id(client, tenant, active=flag) for flag in flags]
    expected = [pid for pid, flag in zip(ids, flags, strict=True) if flag is wanted][::-1]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "active": active, **({"cursor": cursor} if cursor else {})}
        page = (await list_products(client, tenant, **params)).json()
        assert all(item["active"] is wanted for item in page["items"]), page
        seen += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == expected


async def test_the_default_page_holds_ten_products_and_lists_only_the_callers(client, tenant):
    mine = [await product_id(client, tenant) for _ in range(11)]
    await product_id(client, f"{tenant}-other")
    page = (await list_products(client, tenant)).json()
    assert [item["id"] for item in page["items"]] == mine[::-1][:10]
    assert page["nextCursor"] is not None
    rest = (await list_products(client, tenant, cursor=page["nextCursor"])).json()
    assert [item["id"] for item in rest["items"]] == [mine[0]] and rest["nextCursor"] is None


async def test_an_empty_catalogue_lists_no_items(client, tenant):
    response = await list_products(client, tenant)
    assert response.status_code == 200 and response.json() == {"items": [], "nextCursor": None}


@pytest.mark.parametrize("active", ["", "yes", "True", "1", "TRUE", "false "])
async def test_list_with_an_active_other_than_true_or_false_returns_400(client, tenant, active):
    assert_error(await list_products(client, tenant, active=active), 400, "bad_request")


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "101"}, {"cursor": "not-a-cursor"}], ids=repr)
async def test_list_with_a_bad_limit_or_cursor_returns_400(client, tenant, params):
    assert_error(await list_products(client, tenant, **params), 400, "bad_request")


# ------------------------------------------------------------------------------------------- patch
async def test_patch_changes_the_fields_sent_and_adds_one_to_the_version(client, tenant, db):
    pid = await product_id(client, tenant, name="Mug", priceCents=100, stock=3)
    before = await product_row(db, pid)
    response = await patch_product(client, tenant, pid, {"priceCents": 250})
    body = assert_product(response, 200, await product_row(db, pid))
    assert (body["name"], body["priceCents"], body["stock"], body["active"], body["version"]) == (
        "Mug",
        250,
        3,
        True,
        2,
    )
    after = await product_row(db, pid)
    assert after is not None and before is not None and after["updated_at"] >= before["updated_at"]
    renamed = await patch_product(client, tenant, pid, {"name": "Cup", "active": False}, if_match='"2"')
    body = assert_product(renamed, 200, await product_row(db, pid))
    assert (body["name"], body["priceCents"], body["active"], body["version"]) == ("Cup", 250, False, 3)


@pytest.mark.parametrize("if_match", ['"1"', "1", '"7", "1"', "*"])
async def test_patch_with_a_matching_if_match_succeeds(client, tenant, db, if_match):
    pid = await product_id(client, tenant)
    response = await patch_product(client, tenant, pid, {"active": False}, if_match=if_match)
    assert_product(response, 200, await product_row(db, pid))


@pytest.mark.parametrize("if_match", ['"2"', 'W/"1"'])
async def test_patch_with_a_stale_if_match_returns_409_and_changes_nothing(client, tenant, db, if_match):
    pid = await product_id(client, tenant)
    before = await product_row(db, pid)
    response = await patch_product(client, tenant, pid, {"name": "New"}, if_match=if_match)
    assert response.json() == {
        "code": "conflict",
        "message": "stale version",
        "details": {"reason": "stale_version", "currentVersion": 1},
    }
    assert await product_row(db, pid) == before


async def test_patch_without_if_match_returns_428_and_changes_nothing(client, tenant, db):
    pid = await product_id(client, tenant)
    before = await product_row(db, pid)
    assert_error(
        await patch_product(client, tenant, pid, {"name": "x"}, if_match=None), 428, "precondition_required"
    )
    assert await product_row(db, pid) == before


@pytest.mark.parametrize("if_match", [None, '"1"', "*"])
async def test_patch_of_a_missing_product_returns_404_before_428(client, tenant, if_match):
    response = await patch_product(client, tenant, str(uuid.uuid4()), {"name": "x"}, if_match=if_match)
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        *({}, {"name": None}, {"priceCents": None}, {"active": None}, {"name": ""}, {"priceCents": -1}),
        *({"sku": "x"}, {"stock": 5}, {"priceCents": MAX + 1}, {"name": "y" * 201}, [], "name"),
    ],
    ids=repr,
)
async def test_patch_with_nothing_to_change_or_a_bad_field_returns_422_and_changes_nothing(
    client, tenant, db, body
):
    pid = await product_id(client, tenant)
    before = await product_row(db, pid)
    assert_error(await patch_product(client, tenant, pid, body), 422, "validation_error")
    assert await product_row(db, pid) == before


async def test_a_patch_retried_with_its_key_replays_and_changes_once(client, tenant, db):
    pid = await product_id(client, tenant)
    first = await patch_product(client, tenant, pid, {"priceCents": 9}, **{"Idempotency-Key": "p"})
    retry = await patch_product(client, tenant, pid, {"priceCents": 9}, **{"Idempotency-Key": "p"})
    assert first.status_code == 200 and retry.status_code == 200
    assert retry.headers["idempotent-replayed"] == "true" and retry.content == first.content
    row = await product_row(db, pid)
    assert row is not None and row["version"] == 2
    other = await patch_product(client, tenant, pid, {"priceCents": 8}, **{"Idempotency-Key": "p"})
    assert_error(other, 409, "conflict", reason="idempotency_key_reused")


async def test_concurrent_patches_with_one_if_match_let_exactly_one_through(client, tenant, db):
    for _ in range(3):
        pid = await product_id(client, tenant)
        responses = await asyncio.gather(
            *(patch_product(client, tenant, pid, {"priceCents": n}) for n in range(10))
        )
        winners = [r for r in responses if r.status_code == 200]
        assert len(winners) == 1, [r.text for r in responses]
        for loser in responses:
            if loser.status_code != 200:
                assert_error(loser, 409, "conflict", reason="stale_version")
        row = await product_row(db, pid)
        assert row is not None and row["version"] == 2
        assert row["price_cents"] == winners[0].json()["priceCents"]


# ------------------------------------------------------------------------------------------- stock
async def test_a_restock_adds_to_the_stock_and_to_the_version(client, tenant, db):
    pid = await product_id(client, tenant, stock=5)
    response = await change_stock(client, tenant, pid, 7)
    body = assert_product(response, 200, await product_row(db, pid))
    assert (body["stock"], body["version"]) == (12, 2)
    taken = await change_stock(client, tenant, pid, -12)
    assert (taken.json()["stock"], taken.json()["version"]) == (0, 3)


@pytest.mark.parametrize(("stock", "delta"), [(0, -1), (5, -6), (5, -(2**63))])
async def test_a_change_below_zero_returns_409_insufficient_stock_and_changes_nothing(
    client, tenant, db, stock, delta
):
    pid = await product_id(client, tenant, stock=stock)
    before = await product_row(db, pid)
    response = await change_stock(client, tenant, pid, delta, key="short")
    body = assert_error(response, 409, "conflict", reason="insufficient_stock")
    assert body["details"] == {"reason": "insufficient_stock", "available": stock}
    assert await product_row(db, pid) == before
    assert await count_keys(db, tenant) == 1  # the create's: the refused change left its key unused
    retried = await change_stock(client, tenant, pid, 1, key="short")
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers


@pytest.mark.parametrize(("stock", "delta"), [(MAX, 1), (1, MAX), (0, 2**63 - 1), (10, MAX - 9)])
async def test_a_change_above_the_maximum_returns_422_and_changes_nothing(client, tenant, db, stock, delta):
    pid = await product_id(client, tenant, stock=stock)
    before = await product_row(db, pid)
    body = assert_error(await change_stock(client, tenant, pid, delta), 422, "validation_error")
    assert body["message"] == "a total or a stock would exceed 2147483647" and "details" not in body
    assert await product_row(db, pid) == before


async def test_a_change_up_to_the_maximum_is_accepted(client, tenant, db):
    pid = await product_id(client, tenant, stock=10)
    response = await change_stock(client, tenant, pid, MAX - 10)
    assert_product(response, 200, await product_row(db, pid))
    assert response.json()["stock"] == MAX


@pytest.mark.parametrize("delta", [0, 1.5, 1.0, "1", None, 2**63, -(2**63) - 1, True], ids=repr)
async def test_a_zero_or_non_integer_delta_returns_422_and_changes_nothing(client, tenant, db, delta):
    pid = await product_id(client, tenant, stock=3)
    before = await product_row(db, pid)
    assert_error(await change_stock(client, tenant, pid, delta), 422, "validation_error")
    assert await product_row(db, pid) == before


@pytest.mark.parametrize("body", [{}, {"delta": 1, "reason": "x"}, [1]], ids=repr)
async def test_a_stock_body_of_the_wrong_shape_returns_422(client, tenant, db, body):
    pid = await product_id(client, tenant, stock=3)
    headers = admin_headers(tenant, **{"Idempotency-Key": "k"})
    response = await client.post(f"/products/{pid}/stock", headers=headers, json=body)
    assert_error(response, 422, "validation_error")


async def test_a_stock_change_without_an_idempotency_key_returns_400(client, tenant, db):
    pid = await product_id(client, tenant, stock=3)
    response = await client.post(f"/products/{pid}/stock", headers=admin_headers(tenant), json={"delta": 1})
    assert_error(response, 400, "bad_request")
    row = await product_row(db, pid)
    assert row is not None and row["stock"] == 3


@pytest.mark.parametrize("pid", [str(uuid.uuid4()), "not-a-uuid"])
async def test_a_stock_change_of_a_missing_product_returns_404(client, tenant, db, pid):
    assert_error(await change_stock(client, tenant, pid, 1), 404, "not_found")
    assert await count_keys(db, tenant) == 0


async def test_a_restock_retried_with_its_key_counts_once(client, tenant, db):
    pid = await product_id(client, tenant, stock=1)
    first = await change_stock(client, tenant, pid, 10, key="restock-1")
    retry = await change_stock(client, tenant, pid, 10, key="restock-1")
    assert first.status_code == 200 and retry.status_code == 200
    assert retry.headers["idempotent-replayed"] == "true" and retry.content == first.content
    row = await product_row(db, pid)
    assert row is not None and (row["stock"], row["version"]) == (11, 2)
    reused = await change_stock(client, tenant, pid, 5, key="restock-1")
    assert_error(reused, 409, "conflict", reason="idempotency_key_reused")
    row = await product_row(db, pid)
    assert row is not None and row["stock"] == 11


async def test_the_same_restock_key_on_another_product_is_a_reused_key(client, tenant, db):
    first, second = await product_id(client, tenant), await product_id(client, tenant)
    assert (await change_stock(client, tenant, first, 2, key="k")).status_code == 200
    assert_error(await change_stock(client, tenant, second, 2, key="k"), 409, "conflict")
    row = await product_row(db, second)
    assert row is not None and row["stock"] == 0


async def test_concurrent_restocks_add_up_on_the_row(client, tenant, db):
    for round_ in range(3):
        pid = await product_id(client, tenant, stock=100)
        deltas = [n % 7 + 1 if n % 3 else -(n % 5 + 1) for n in range(20)]
        responses = await asyncio.gather(*(change_stock(client, tenant, pid, d) for d in deltas))
        assert all(r.status_code == 200 for r in responses), (round_, [r.text for r in responses])
        row = await product_row(db, pid)
        assert row is not None and (row["stock"], row["version"]) == (100 + sum(deltas), 1 + len(deltas))
        assert sorted(r.json()["version"] for r in responses) == list(range(2, 2 + len(deltas)))


async def test_concurrent_retries_of_one_restock_count_once(client, tenant, db):
    pid = await product_id(client, tenant, stock=0)
    responses = await asyncio.gather(*(change_stock(client, tenant, pid, 4, key="once") for _ in range(10)))
    assert all(r.status_code in (200, 409) for r in responses), [r.text for r in responses]
    assert any(r.status_code == 200 and "idempotent-replayed" not in r.headers for r in responses)
    row = await product_row(db, pid)
    assert row is not None and (row["stock"], row["version"]) == (4, 2)


async def test_concurrent_takes_never_drive_the_stock_below_zero(client, tenant, db):
    pid = await product_id(client, tenant, stock=10)
    responses = await asyncio.gather(*(change_stock(client, tenant, pid, -1) for _ in range(30)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [409] * 20, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["details"] == {"reason": "insufficient_stock", "available": 0}
    row = await product_row(db, pid)
    assert row is not None and (row["stock"], row["version"]) == (0, 11)


# ------------------------------------------------------------------------------------------- tenancy
@pytest.fixture
def stranger(tenant: str) -> str:
    return f"{tenant}-stranger"


async def test_another_tenants_product_is_a_404_like_a_missing_one(client, tenant, stranger):
    pid = await product_id(client, tenant)
    foreign = await client.get(f"/products/{pid}", headers={"X-Tenant-Id": stranger})
    missing = await client.get(f"/products/{uuid.uuid4()}", headers={"X-Tenant-Id": stranger})
    assert assert_error(foreign, 404, "not_found") == assert_error(missing, 404, "not_found")


@pytest.mark.parametrize(
    "write",
    ["patch", "patch-any", "patch-no-if-match", "stock-up", "stock-down"],
)
async def test_writing_to_another_tenants_product_returns_404_and_changes_nothing(
    client, tenant, stranger, db, write
):
    pid = await product_id(client, tenant, stock=5)
    before = await product_row(db, pid)
    response = await {
        "patch": lambda: patch_product(client, stranger, pid, {"name": "x"}),
        "patch-any": lambda: patch_product(client, stranger, pid, {"name": "x"}, if_match="*"),
        "patch-no-if-match": lambda: patch_product(client, stranger, pid, {"name": "x"}, if_match=None),
        "stock-up": lambda: change_stock(client, stranger, pid, 5),
        "stock-down": lambda: change_stock(client, stranger, pid, -5),
    }[write]()
    assert_error(response, 404, "not_found")
    assert await product_row(db, pid) == before
    assert await count_keys(db, stranger) == 0


# ------------------------------------------------------------------------------------------- text
async def test_text_with_a_nul_character_is_refused_with_422_wherever_it_would_be_stored(client, tenant, db):
    """PostgreSQL's text cannot hold NUL: product names and cancel reasons refuse it before the database."""
    pid = await product_id(client, tenant)
    before = await product_row(db, pid)
    named = await create_product(client, tenant, product_body(name="a\u0000b"))
    renamed = await patch_product(client, tenant, pid, {"name": "\u0000"})
    created = await client.post("/orders", headers={"X-Tenant-Id": tenant, "Idempotency-Key": "o"})
    order_id = created.json()["id"]
    cancel = await client.post(
        f"/orders/{order_id}/cancel", headers={"X-Tenant-Id": tenant}, json={"reason": "why\u0000"}
    )
    for response in (named, renamed, cancel):
        assert_error(response, 422, "validation_error")
    assert await product_row(db, pid) == before and await count_products(db, tenant) == 1
    status = await db.fetchval("SELECT status FROM orders WHERE id = $1", uuid.UUID(order_id))
    assert status == "draft"

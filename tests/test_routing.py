"""The route table's own walk (`routing.Dispatch`) serves exactly the requests Starlette's routes would."""

import uuid

import pytest
from starlette.routing import Match, Route

from orders_svc import routing
from orders_svc.api import OPERATIONS

from helpers import tenant_headers
from support import assert_error

TABLE = routing.table(OPERATIONS)
ROUTES = routing.routes(TABLE)
DISPATCH = routing.Dispatch(TABLE, ROUTES, fallback=None)  # type: ignore[arg-type]


def starlette_match(path: str, method: str) -> tuple[str, dict[str, str]] | None:
    """The route (template, path parameters) Starlette's router would serve the request with, if any."""
    scope = {"type": "http", "path": path, "method": method, "root_path": ""}
    for route in ROUTES:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route.path, child["path_params"]
    return None


def candidate_paths() -> list[str]:
    """Every template filled in, then bent: empty, extra and missing segments, slashes, case, encodings."""
    ids = [str(uuid.uuid4()), "not-a-uuid", "%2F", "a b", "é", "{order_id}", "."]
    paths = {"/", "//", "", "*", "/orders/", "//orders", "/ORDERS", "/orders/x/y/z", "/docs/static/x.js"}
    for op in OPERATIONS:
        for value in ids:
            filled = op.path
            for name in op.path_params:
                filled = filled.replace("{" + name + "}", value)
            paths |= {filled, filled + "/", filled + "/x", "/" + filled, filled.replace("/", "//", 2)}
            paths |= {filled.rsplit("/", 1)[0], filled.upper(), "x" + filled}
        paths.add(op.path.replace("{order_id}", "").replace("{product_id}", "").replace("{payment_id}", ""))
    return sorted(paths)


def test_every_operation_is_served_by_the_walk_with_its_route_and_parameters():
    for op in OPERATIONS:
        ids = {name: str(uuid.uuid4()) for name in op.path_params}
        found = DISPATCH.find(op.path.format(**ids))
        assert found is not None, op.path
        node, params = found
        assert isinstance(node.route, Route) and node.route.path == op.path and params == ids
        assert op.method in node.methods and ("HEAD" in node.methods) == ("GET" in node.methods)


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "HEAD"])
def test_the_walk_never_serves_a_request_differently_from_starlettes_routes(method):
    served = 0
    for path in candidate_paths():
        found = DISPATCH.find(path) if path.startswith("/") else None
        if found is None or method not in found[0].methods:
            continue  # handed to Starlette's router, which answers as it always did
        node, params = found
        assert node.route is not None
        assert starlette_match(path, method) == (node.route.path, params), path
        served += 1
    assert served > len(OPERATIONS) // 4


async def test_paths_next_to_the_table_are_404_and_head_answers_as_get(client, tenant):
    headers = tenant_headers(tenant)
    for path in ("/orders//close", "//orders", "/orders/%2F/close", "/payments/", "/products//stock"):
        assert_error(await client.get(path, headers=headers), 404, "not_found")
    listed = await client.get("/orders", headers=headers)
    head = await client.head("/orders", headers=headers)
    assert listed.status_code == head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == listed.headers["content-length"]

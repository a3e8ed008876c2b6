"""What operators and tooling call: liveness, readiness, the OpenAPI document and the docs page."""

import asyncio
import hmac

import msgspec
from starlette.responses import HTMLResponse, Response

from .. import db, errors
from ..errors import ApiError
from ..observability import metrics
from ..queries import health, outbox
from ..resources import migration_ids
from ..routing import Call, Operation, json_response
from ..schemas import Health

_OK = msgspec.json.encode({"status": "ok"})
_MIGRATIONS = migration_ids()


async def healthz(_: Call) -> bytes:
    return _OK


async def readyz(call: Call) -> bytes:
    """Ready = the database answers and holds every migration this build ships: an unmigrated or older
    schema would turn order requests into 500s. Migrations it does not know (a newer release's) are not its
    concern."""
    try:
        async with asyncio.timeout(2):
            async with db.connection(call.pool) as conn:
                applied = await health.applied_migrations(conn)
    except (ApiError, TimeoutError):
        raise errors.UNAVAILABLE.error() from None
    missing = [m for m in _MIGRATIONS if m not in applied]
    if missing:
        raise errors.SCHEMA_NOT_MIGRATED.error(missingMigrations=missing)
    return _OK


async def scrape(call: Call) -> Response:
    """Prometheus text: requests, the pool, idempotency, transitions, limits (every worker's) and the outbox
    backlog (read at most once a second; left out while the database does not answer)."""
    request = call.request
    token = request.app.state.settings.metrics_token
    if token is not None and not hmac.compare_digest(
        request.headers.get("authorization", "").encode(), f"Bearer {token}".encode()
    ):
        raise errors.TOKEN_REQUIRED.error()
    metrics.record_pool(call.pool.usage())
    return Response(metrics.exposition(await _backlog(call)), media_type=metrics.CONTENT_TYPE_LATEST)


async def _backlog(call: Call) -> metrics.OutboxBacklog | None:
    cache: metrics.BacklogCache = call.request.app.state.backlog
    backlog = cache.fresh()
    if backlog is not None:
        return backlog
    try:
        async with asyncio.timeout(2):
            async with db.connection(call.pool) as conn:
                return cache.store(metrics.OutboxBacklog(*await outbox.outbox_backlog(conn)))
    except (ApiError, TimeoutError):
        return None


async def openapi(call: Call) -> Response:
    return json_response(call.request.app.state.openapi)


async def docs(_: Call) -> Response:
    return HTMLResponse(DOCS_HTML)


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>orders-svc API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", validatorUrl: null});</script>
</body></html>"""

OPERATIONS = (
    Operation(
        "GET", "/healthz", "healthz", "Liveness: the process answers", healthz, response=Health, tenant=False
    ),
    Operation(
        "GET",
        "/readyz",
        "readyz",
        "Readiness: the database answers and has every migration of this build",
        readyz,
        response=Health,
        tenant=False,
        errors=(errors.UNAVAILABLE, errors.SCHEMA_NOT_MIGRATED),
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics (text exposition format)",
        scrape,
        tenant=False,
        errors=(errors.TOKEN_REQUIRED,),
        content_type="text/plain",
        description="With ORDERS_METRICS_TOKEN set: `Authorization: Bearer <token>` required. "
        "See docs/observability.md for the metric list.",
    ),
    Operation("GET", "/openapi.json", "openapi", "This OpenAPI 3.1 document", openapi, tenant=False),
    Operation(
        "GET",
        "/docs",
        "docs",
        "Interactive API docs, served with their assets by the service itself",
        docs,
        tenant=False,
        content_type="text/html",
    ),
)

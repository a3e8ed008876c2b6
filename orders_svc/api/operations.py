"""What operators and tooling call: liveness, readiness, the OpenAPI document and the docs pages."""

import asyncio
import hmac
from pathlib import Path

import msgspec
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from .. import db, errors
from ..errors import ApiError
from ..observability import metrics
from ..queries import health, outbox
from ..resources import migration_ids
from ..routing import Call, JsonResponse, Operation
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
    cache: metrics.BacklogCache = call.state.backlog
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
    return JsonResponse(call.state.openapi)


# The docs pages run the vendored UIs and their own start-up files, all from this origin: no inline script,
# nothing fetched from elsewhere. Inline styles are allowed (both UIs set them from JavaScript), and so are
# images as data: URLs (Swagger UI's icons).
DOCS_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>orders-svc API{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">{head}</head>
<body><div id="{root}"></div>
<script src="/docs/static/{bundle}"></script>
<script src="/docs/static/{init}"></script>
</body></html>"""
DOCS_HTML = _PAGE.format(
    title="",
    head='\n<link rel="stylesheet" href="/docs/static/swagger-ui.css">',
    root="swagger-ui",
    bundle="swagger-ui-bundle.js",
    init="swagger-init.js",
)
REDOC_HTML = _PAGE.format(
    title=" (Redoc)", head="", root="redoc", bundle="redoc.standalone.js", init="redoc-init.js"
)


async def docs(_: Call) -> Response:
    return HTMLResponse(DOCS_HTML, headers={"Content-Security-Policy": DOCS_CSP})


async def redoc(_: Call) -> Response:
    return HTMLResponse(REDOC_HTML, headers={"Content-Security-Policy": DOCS_CSP})


DOCS_DIR = Path(__file__).resolve().parent.parent / "docs_ui"
# /docs/static/<name> → the file under docs_ui/: what the two pages load, and nothing else of the vendored
# packages (no stock index.html, OAuth2 redirect page or source maps).
DOCS_ASSETS = {
    "swagger-ui.css": "swagger-ui/swagger-ui.css",
    "swagger-ui-bundle.js": "swagger-ui/swagger-ui-bundle.js",
    "swagger-init.js": "swagger-init.js",
    "redoc.standalone.js": "redoc/redoc.standalone.js",
    "redoc-init.js": "redoc-init.js",
}


class DocsAssets(StaticFiles):
    """The docs pages' files, by name from `DOCS_ASSETS`; any other path is a 404."""

    def __init__(self) -> None:
        super().__init__(directory=DOCS_DIR)

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] in ("GET", "HEAD") and path not in DOCS_ASSETS:
            raise HTTPException(status_code=404)
        return await super().get_response(DOCS_ASSETS.get(path, path), scope)


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
        "Interactive API docs (Swagger UI), served with their assets by the service itself",
        docs,
        tenant=False,
        content_type="text/html",
    ),
    Operation(
        "GET",
        "/redoc",
        "redoc",
        "API reference (Redoc), served with its assets by the service itself",
        redoc,
        tenant=False,
        content_type="text/html",
    ),
)

"""The application: the route table served, its layers, lifespan (which owns the pool) and error handlers."""

import gc
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Lifespan

from . import db, routing
from .api import OPERATIONS
from .api.operations import DocsAssets
from .errors import ApiError, api_error_handler, http_exception_handler
from .logs import configure
from .middleware import RequestContext
from .observability import metrics, tracing
from .observability.limits import Limits
from .openapi import build_spec
from .settings import Settings
from .tenancy import Authenticator


class AppState(State):
    """What the application holds for its handlers (settings, pool, authenticator, limits...), as plain
    attributes: Starlette's `State` keeps them in a dict read through a Python `__getattr__`, one call per
    read, several per request."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)


class Service(Starlette):
    """The application: Starlette's, with its own stack of layers around the routes.

    `RequestContext` (request id, log line, metrics, tracing, the 500 of last resort) around `Dispatch`,
    which serves the route table's operations directly and hands everything else to Starlette's router
    behind its exception middleware (the envelope for `ApiError` and for the router's own 404 and 405).
    Starlette's outer error middleware is not used: `RequestContext` answers what escapes in the envelope.
    """

    def __init__(self, operations: Iterable[routing.Operation], lifespan: Lifespan[Starlette]) -> None:
        self.served = routing.table(operations)
        routes: list[BaseRoute] = [
            *routing.routes(self.served),
            Mount("/docs/static", DocsAssets(), name="docs-static"),
        ]
        super().__init__(routes=routes, lifespan=lifespan)
        self.state = AppState()
        # `/orders/` is an unknown route (404 in the envelope), not a bodiless 307 to a Host-derived URL.
        self.router.redirect_slashes = False

    def build_middleware_stack(self) -> ASGIApp:
        handlers = {ApiError: api_error_handler, HTTPException: http_exception_handler}
        fallback = ExceptionMiddleware(self.router, handlers=handlers)
        routes = [route for route in self.routes if isinstance(route, Route)]
        return RequestContext(routing.Dispatch(self.served, routes, fallback))


def create_app(settings: Settings) -> Starlette:
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url (the CLI starts an embedded database)")
    dsn = settings.database_url

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await db.create_pool(settings, dsn, generic_plans=True)
        recording = metrics.keep_pool_recorded(app.state.pool)
        try:
            yield
        finally:
            if recording is not None:
                recording.cancel()
            await app.state.pool.close()
            metrics.process_exited()

    app = Service(OPERATIONS, lifespan)
    app.state.settings = settings
    app.state.openapi = msgspec.json.encode(build_spec(OPERATIONS))
    app.state.auth = Authenticator(settings)
    app.state.limits = Limits.from_settings(settings)
    app.state.backlog = metrics.BacklogCache()
    metrics.state.enabled = settings.metrics
    return app


# Young collections every 10,000 net allocations of tracked objects rather than CPython's default 700. Under
# load the objects of the requests in flight kept tripping the default: about 280 young collections a second
# (5 % of the CPU with the middle generation), whose survivors fed two full collections of the whole heap a
# second (15-25 ms each, every request in flight waiting, 3 % more). Request objects die by reference
# counting; cyclic garbage, what the collector is for, comes to about one object per request.
YOUNG_GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """For a serving process, once its modules and app exist: collect rarely, and never re-scan start-up."""
    gc.collect()
    gc.freeze()  # everything alive now (modules, routes, settings) moves to a generation no collection scans
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def app_from_env() -> Starlette:
    """uvicorn factory for `--workers N`: each worker reads the environment the CLI prepared."""
    settings = Settings.from_env()
    configure(settings.log_level, settings.log_format)
    tracing.configure()
    app = create_app(settings)
    tune_gc()
    return app

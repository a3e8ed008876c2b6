"""orders-svc: an Orders API on Starlette, asyncpg and PostgreSQL."""

__version__ = "0.1.0"

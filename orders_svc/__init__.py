"""orders-svc: an Orders API on Starlette, asyncpg and PostgreSQL."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("orders-svc")  # pyproject.toml's version, the one source
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

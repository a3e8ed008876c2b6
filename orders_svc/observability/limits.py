"""Per-tenant rate limits: a token bucket per tenant and policy (writes, reads), kept in each worker process.

Per process, deliberately: a limited request is answered from memory (no database, no shared state), and an
allowed one pays a dict lookup and a little arithmetic (about a microsecond). Shared buckets would need a
write per request to PostgreSQL, the one shared store at hand: a round trip and a row lock on a hot row per
request, more than the cheapest requests cost in all. So a tenant's ceiling is the configured rate times the
worker processes and instances serving it; set the rate accordingly (docs/observability.md).

Response fields after draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "writes";q=100;w=1` and
`RateLimit: "writes";r=<remaining>;t=<seconds until the bucket is full again>`; past the limit 429 with
`Retry-After` (seconds until a request would be allowed).
"""

import math
import time
from collections.abc import Callable

from starlette.types import Scope

from .. import errors
from ..settings import Rate, Settings
from . import metrics

READS = frozenset({"GET", "HEAD", "OPTIONS"})
# Where the middleware finds the fields to add to the response.
SCOPE_KEY = "orders.ratelimit"
# Past this many tenants in a policy's table, buckets that have refilled (indistinguishable from new ones)
# are dropped.
SWEEP_AT = 10_000


class Policy:
    """One policy's buckets: tenant -> (tokens, when they were counted)."""

    __slots__ = ("_buckets", "_clock", "burst", "field", "name", "rate", "sweep_at")

    def __init__(self, name: str, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.rate = rate.requests / rate.seconds  # tokens per second
        self.burst = float(rate.burst)
        self.field = f'"{name}";q={rate.requests};w={rate.seconds}'.encode()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._clock = clock
        self.sweep_at = SWEEP_AT

    def take(self, tenant: str) -> tuple[bool, float]:
        """Take a token for `tenant`: whether there was one, and the tokens left."""
        now = self._clock()
        tokens, then = self._buckets.get(tenant, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        if len(self._buckets) >= self.sweep_at and tenant not in self._buckets:
            self._sweep(now)
        self._buckets[tenant] = (tokens, now)
        return allowed, tokens

    def _sweep(self, now: float) -> None:
        rate, burst = self.rate, self.burst
        full = [t for t, (tokens, then) in self._buckets.items() if tokens + (now - then) * rate >= burst]
        for tenant in full:
            del self._buckets[tenant]
        self.sweep_at = max(SWEEP_AT, 2 * len(self._buckets))  # many busy tenants: sweep less often

    def fields(self, tokens: float) -> list[tuple[bytes, bytes]]:
        reset = math.ceil((self.burst - tokens) / self.rate)
        remaining = f'"{self.name}";r={int(tokens)};t={reset}'.encode()
        return [(b"ratelimit-policy", self.field), (b"ratelimit", remaining)]

    def retry_after(self, tokens: float) -> int:
        return max(1, math.ceil((1 - tokens) / self.rate))


class Limits:
    """The writes and reads policies of a service; `check` runs once the request's tenant is known."""

    __slots__ = ("reads", "writes")

    def __init__(self, writes: Policy | None, reads: Policy | None) -> None:
        self.writes = writes
        self.reads = reads

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits | None":
        writes, reads = settings.rate_limit_writes, settings.rate_limit_reads
        if writes is None and reads is None:
            return None
        return cls(
            Policy("writes", writes) if writes is not None else None,
            Policy("reads", reads) if reads is not None else None,
        )

    def check(self, scope: Scope, tenant: str) -> None:
        """Charge the request to its tenant's bucket; 429 rate_limited when empty (nothing else happens)."""
        policy = self.reads if scope["method"] in READS else self.writes
        if policy is None:
            return
        allowed, tokens = policy.take(tenant)
        scope[SCOPE_KEY] = policy.fields(tokens)
        if not allowed:
            if metrics.state.enabled:
                metrics.rate_limited(policy.name)
            error = errors.RATE_LIMITED.error(policy=policy.name)
            error.headers = {"Retry-After": str(policy.retry_after(tokens))}
            raise error

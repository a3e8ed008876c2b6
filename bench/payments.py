"""The payment scenarios: POST /orders/{id}/payments over confirmed orders, and valid signed webhook
deliveries settling pending payments (signed just before their run: a signature is good for 300 s)."""

import uuid
from pathlib import Path

import msgspec
import psycopg
from sampling import Result

from orders_svc import signatures

# The service under test verifies with this secret (bench/service.py); the deliveries are signed with it.
SECRET = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMzItYnl0ZXMhIQ=="  # noqa: S105 - a bench-only secret
TARGET_WEBHOOK_RPS = 1_500


def seed_pending_payments(dsn: str, prefix: str, threads: int, per_thread: int, files: Path) -> None:
    """`per_thread` confirmed orders with a pending payment for each tenant prefix+i, and the signed
    success delivery of each payment in files+i."""
    key = signatures.decode_secret(SECRET)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """
            WITH o AS (
                INSERT INTO orders (id, tenant_id, status, version, total_cents, created_at, updated_at)
                SELECT gen_random_uuid(), %(prefix)s || t, 'confirmed', 2, 1999, now(), now()
                FROM generate_series(0, %(threads)s - 1) AS t, generate_series(1, %(count)s) AS n
                RETURNING id, tenant_id
            )
            INSERT INTO payments (id, tenant_id, order_id, status, amount_cents, created_at, updated_at)
            SELECT gen_random_uuid(), tenant_id, id, 'pending', 1999, now(), now() FROM o
            RETURNING tenant_id, id
            """,
            {"prefix": prefix, "threads": threads, "count": per_thread},
        ).fetchall()
    by_tenant: dict[str, list[str]] = {}
    for tenant, payment_id in rows:
        body = msgspec.json.encode(
            {"type": "payment.succeeded", "data": {"paymentId": str(payment_id), "amountCents": 1999}}
        )
        sent = signatures.sign(key, f"msg_{uuid.uuid4().hex}", body)
        line = "\t".join((*sent.values(), body.decode()))
        by_tenant.setdefault(tenant, []).append(line)
    for index in range(threads):
        Path(f"{files}{index}").write_text("\n".join(by_tenant[f"{prefix}{index}"]) + "\n")


def verify_payments(dsn: str, results: dict[str, Result]) -> list[str]:
    """The payments and settlements the table counts really happened."""
    lines = []
    with psycopg.connect(dsn) as conn:
        for key, query, what in (
            ("pay", "SELECT count(*) FROM payments WHERE tenant_id LIKE 'bench-pay-%%'", "payments"),
            (
                "webhook",
                "SELECT count(*) FROM orders WHERE tenant_id LIKE 'bench-webhook-%%' AND status = 'paid'",
                "orders paid",
            ),
        ):
            result = results.get(key)
            if result is None:
                continue
            row = conn.execute(query).fetchone()
            assert row is not None
            ok = result.requests - result.failures
            lines.append(
                f"{key}: {ok:,} successful responses counted by wrk, {row[0]:,} {what} in the database"
            )
    return lines

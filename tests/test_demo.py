"""scripts/demo.sh, the README's cURL walkthrough, answers as the contract says against the real server."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from payment_helpers import SECRET

from servers import serving

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.sh"


@pytest.fixture(scope="module")
def demo_server(database_url, tmp_path_factory):
    """The real service, with the webhook secret the demo's fake provider signs with."""
    log = tmp_path_factory.mktemp("demo") / "server.log"
    with serving(database_url, log, ORDERS_WEBHOOK_SECRETS=SECRET) as base:
        yield base


def test_demo_script_walks_the_lifecycle_with_the_contract_statuses(demo_server):
    provider = Path(sys.executable).parent / "orders-svc"
    result = subprocess.run(
        ["bash", str(DEMO)],
        env={
            "BASE_URL": demo_server,
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "ORDERS_SVC": str(provider),
            "ORDERS_WEBHOOK_SECRETS": SECRET,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    statuses = [int(s) for s in re.findall(r"^HTTP/1.1 (\d{3})", result.stdout, re.MULTILINE)]
    # create, replay, reused key, confirm, stale confirm, close, page 1, page 2, cancel, cancel again,
    # missing If-Match, bad cursor
    orders = [201, 200, 409, 200, 409, 200, 200, 200, 200, 409, 428, 400]
    # product create, create without the admin role, product list, price change, restock, take too many
    catalogue = [201, 403, 200, 200, 200, 409]
    # order with items, one past the stock, confirm with {}, cancel (its stock back)
    items = [201, 409, 200, 200]
    # payments: create with items, confirm, pay, (the fake provider's webhook), the paid order, close; the
    # failure path: create, confirm, pay, (webhook), its payments, the cancelled order, the product's stock
    payments = [201, 200, 201, 200, 200, 201, 200, 201, 200, 200, 200]
    assert statuses == orders + catalogue + items + payments
    assert "idempotent-replayed: true" in result.stdout
    assert '"reason":"idempotency_key_reused"' in result.stdout
    assert '"reason":"stale_version","currentVersion":2' in result.stdout
    assert '"status":"closed","version":3' in result.stdout
    assert '"status":"cancelled","version":2' in result.stdout
    assert '"reason":"invalid_transition","currentStatus":"cancelled"' in result.stdout
    assert result.stdout.count('"nextCursor":null') == 2
    assert '"reason":"role_required","role":"admin"' in result.stdout
    assert '"priceCents":1400,"stock":10,"active":true,"version":2' in result.stdout
    assert '"stock":15,"active":true,"version":3' in result.stdout
    assert '"reason":"insufficient_stock","available":15' in result.stdout
    assert '"totalCents":2800,' in result.stdout and '"reservedUntil":' in result.stdout
    assert '"details":{"reason":"insufficient_stock","items":[{"productId":' in result.stdout
    assert '"requested":50,"available":13}]' in result.stdout
    assert '"status":"cancelled","version":3' in result.stdout
    assert '"status":"paid","version":3' in result.stdout
    assert '"status":"closed","version":4' in result.stdout
    assert '"status":"failed","failureReason":"card_declined"' in result.stdout
    assert '"status":"cancelled","version":3' in result.stdout
    assert '"stock":13,"active":true' in result.stdout
    assert result.stdout.count('HTTP 200 {"id"') == 2  # the two webhooks the fake provider posted

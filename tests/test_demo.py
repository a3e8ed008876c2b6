"""scripts/demo.sh, the README's cURL walkthrough, answers as the contract says against the real server."""

import re
import subprocess
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.sh"


def test_demo_script_walks_the_lifecycle_with_the_contract_statuses(live_server):
    result = subprocess.run(
        ["bash", str(DEMO)],
        env={"BASE_URL": live_server, "PATH": "/usr/bin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    statuses = [int(s) for s in re.findall(r"^HTTP/1.1 (\d{3})", result.stdout, re.MULTILINE)]
    # create, replay, reused key, confirm, stale confirm, close, page 1, page 2, cancel, cancel again,
    # missing If-Match, bad cursor
    assert statuses == [201, 200, 409, 200, 409, 200, 200, 200, 200, 409, 428, 400]
    assert "idempotent-replayed: true" in result.stdout
    assert '"reason":"idempotency_key_reused"' in result.stdout
    assert '"reason":"stale_version","currentVersion":2' in result.stdout
    assert '"status":"closed","version":3' in result.stdout
    assert '"status":"cancelled","version":2' in result.stdout
    assert '"reason":"invalid_transition","currentStatus":"cancelled"' in result.stdout
    assert result.stdout.count('"nextCursor":null') == 1

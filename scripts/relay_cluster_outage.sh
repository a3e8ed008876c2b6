#!/usr/bin/env bash
# The quorum-loss acceptance run in full: a 3-node JetStream cluster on loopback loses two nodes for 60 s
# under steady closes with two relays, then gets them back. Prints the figures (closes, backlog, time to drain,
# the relays' lines about the broker). The suite runs the same test with a 10 s outage.
#
#     bash scripts/relay_cluster_outage.sh            # 60 s
#     bash scripts/relay_cluster_outage.sh 120        # another length, in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS_TEST_QUORUM_OUTAGE_SECONDS="${1:-60}" exec .venv/bin/pytest -q -s -p no:cacheprovider \
    tests/test_relay_cluster.py -k quorum_lost

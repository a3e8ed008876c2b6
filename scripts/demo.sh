#!/usr/bin/env bash
# The whole order lifecycle over HTTP, printing every request and response.
# Usage: scripts/demo.sh            (service on http://127.0.0.1:8000, e.g. from `make run`)
#        BASE_URL=http://host:port TENANT=acme scripts/demo.sh
set -euo pipefail

BASE_URL=${BASE_URL:-http://127.0.0.1:8000}
TENANT=${TENANT:-demo-$(date +%s)}
KEY="create-$(date +%s%N)"
BODY=$(mktemp)
trap 'rm -f "$BODY"' EXIT
if [[ -t 1 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi

# call METHOD PATH [curl args...]: print the request, then status, interesting headers and body.
call() {
  local method=$1 path=$2
  shift 2
  local line="curl -X $method '$BASE_URL$path' -H 'X-Tenant-Id: $TENANT'" arg
  for arg in "$@"; do
    if [[ $arg == -* ]]; then line+=" $arg"; else line+=" '$arg'"; fi
  done
  printf '\n%s$ %s%s\n' "$BOLD" "$line" "$PLAIN"
  curl -sS -X "$method" "$BASE_URL$path" -H "X-Tenant-Id: $TENANT" "$@" -D - -o "$BODY" \
    | grep -iE '^(HTTP/|etag|location|idempotent-replayed|retry-after)' | tr -d '\r'
  cat "$BODY"
  echo
}

field() { python3 -c "import json,sys; print(json.load(open('$BODY'))['$1'] or '')"; }

echo "# tenant: $TENANT"

echo; echo "## 1. Create a draft (201, Location, ETag \"1\")"
call POST /orders -H "Idempotency-Key: $KEY" -d '{}'
ID=$(field id)

echo; echo "## 2. Retry with the same key and body: the stored response, byte for byte (200, Idempotent-Replayed)"
call POST /orders -H "Idempotency-Key: $KEY" -d '{ }'

echo; echo "## 3. Same key, different body: 409 idempotency_key_reused"
call POST /orders -H "Idempotency-Key: $KEY" -d "{\"tenantId\": \"$TENANT\"}"

echo; echo "## 4. Confirm with If-Match \"1\" (200, version 2, ETag \"2\")"
call PATCH "/orders/$ID/confirm" -H 'If-Match: "1"' -d '{"totalCents": 4200}'

echo; echo "## 5. Confirm again with the stale If-Match \"1\": 409 stale_version"
call PATCH "/orders/$ID/confirm" -H 'If-Match: "1"' -d '{"totalCents": 9900}'

echo; echo "## 6. Close: status closed, version 3, one orders.closed event in the outbox"
call POST "/orders/$ID/close" -H 'If-Match: "2"'

echo; echo "## 7. Two more orders, then list two pages of two"
call POST /orders -H "Idempotency-Key: $KEY-2" -d '{}' >/dev/null
DRAFT=$(field id)
call POST /orders -H "Idempotency-Key: $KEY-3" -d '{}' >/dev/null
call GET "/orders?limit=2"
CURSOR=$(field nextCursor)
call GET "/orders?limit=2&cursor=$CURSOR"

echo; echo "## 8. Cancel a draft with a reason: status cancelled, one orders.cancelled event; once only"
call POST "/orders/$DRAFT/cancel" -H 'If-Match: "1"' -d '{"reason": "ordered twice"}'
call POST "/orders/$DRAFT/cancel" -d '{}'

echo; echo "## 9. Errors share one shape"
call PATCH "/orders/$ID/confirm" -d '{"totalCents": 1}'
call GET "/orders?cursor=not-a-cursor"

echo; echo "## 10. The catalogue: writes need the admin role (X-Roles in dev mode, the token's roles claim)"
call POST /products -H "Idempotency-Key: $KEY-p" -H 'X-Roles: admin' \
  -d '{"sku": "MUG-BLUE", "name": "Blue mug", "priceCents": 1250, "stock": 10}'
PRODUCT=$(field id)
call POST /products -H "Idempotency-Key: $KEY-p2" -d '{"sku": "MUG-RED", "name": "Red mug", "priceCents": 1250}'
call GET "/products?active=true&limit=5"

echo; echo "## 11. Change the price with If-Match \"1\" (version 2); restock 5 (version 3); take more than there is: 409"
call PATCH "/products/$PRODUCT" -H 'X-Roles: admin' -H 'If-Match: "1"' -d '{"priceCents": 1400}'
call POST "/products/$PRODUCT/stock" -H 'X-Roles: admin' -H "Idempotency-Key: $KEY-s" -d '{"delta": 5}'
call POST "/products/$PRODUCT/stock" -H 'X-Roles: admin' -H "Idempotency-Key: $KEY-s2" -d '{"delta": -100}'

echo; echo "## 12. An order with items: prices copied, stock reserved until reservedUntil (201, totalCents 2800)"
call POST /orders -H "Idempotency-Key: $KEY-i" -d "{\"items\": [{\"productId\": \"$PRODUCT\", \"quantity\": 2}]}"
ITEMS=$(field id)

echo; echo "## 13. More than the stock left: 409 insufficient_stock naming the line and what is available"
call POST /orders -H "Idempotency-Key: $KEY-i2" -d "{\"items\": [{\"productId\": \"$PRODUCT\", \"quantity\": 50}]}"

echo; echo "## 14. Confirm with {} (the total is the items'), then cancel: the 2 units go back to the stock (15)"
call PATCH "/orders/$ITEMS/confirm" -H 'If-Match: "1"' -d '{}'
call POST "/orders/$ITEMS/cancel" -d '{"reason": "out of budget"}'

# The fake provider signs with the first of ORDERS_WEBHOOK_SECRETS: the service must have the same.
PROVIDER=${ORDERS_SVC:-orders-svc}

# order_and_pay NAME QUANTITY: an order of QUANTITY mugs, confirmed, its payment asked for (ORDER, PAYMENT).
order_and_pay() {
  call POST /orders -H "Idempotency-Key: $KEY-$1" -d "{\"items\": [{\"productId\": \"$PRODUCT\", \"quantity\": $2}]}"
  ORDER=$(field id)
  call PATCH "/orders/$ORDER/confirm" -H 'If-Match: "1"' -d '{}'
  call POST "/orders/$ORDER/payments" -H "Idempotency-Key: $KEY-$1-pay"
  PAYMENT=$(field id)
  AMOUNT=$(field amountCents)
}

# settle OUTCOME: the provider's signed webhook for PAYMENT.
settle() {
  printf '\n%s$ %s%s\n' "$BOLD" "orders-svc fake-provider settle $PAYMENT --outcome $1 --amount $AMOUNT" "$PLAIN"
  $PROVIDER fake-provider settle "$PAYMENT" --outcome "$1" --amount "$AMOUNT" --url "$BASE_URL/webhooks/payments"
}

echo; echo "## 15. Payments: an order of 2 mugs (stock 15 -> 13), confirmed, paid by the provider's webhook, closed"
order_and_pay paid 2
settle succeeded
call GET "/orders/$ORDER"
call POST "/orders/$ORDER/close" -H 'If-Match: "3"'

echo; echo "## 16. A failed payment cancels its order and gives its stock back (13 -> 10 -> 13)"
order_and_pay failed 3
settle failed
call GET "/orders/$ORDER/payments"
call GET "/orders/$ORDER"
call GET "/products/$PRODUCT"

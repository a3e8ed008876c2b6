-- Payments: asked for by a tenant's request, settled by the provider's webhook. A settlement is one statement
-- (settle_payment) that locks the payment row, then its order, then claims the delivery id; a failure's
-- compensation (transition_order, sql/orders.sql) then cancels the order and locks its products in id order in
-- the same transaction: payment -> order -> products, as everywhere. The delivery's answer is stored by the statement that settles (webhook_deliveries).

-- name: create_payment
-- Fast path of an idempotent payment request, one statement: while order $2 of tenant $1 is confirmed with the
-- total $5 the response was rendered with and has no pending or succeeded payment, claims key $6 (fingerprint
-- $7, lifetime $10) storing response $8/$9, and inserts payment $3 (pending, created at $4) with outbox event
-- $11 payments.requested. Returns whether the key was new, and whether it was claimed: a key that exists (after
-- waiting for a concurrent claim of it to end) or an order in another state claims nothing and writes nothing.
-- The order is share-locked, so it cannot change state before this commits.
WITH fresh AS (
    SELECT NOT EXISTS (SELECT 1 FROM idempotency_keys WHERE tenant_id = $1 AND key = $6) AS yes
), target AS (
    SELECT id, version
    FROM orders
    WHERE tenant_id = $1 AND id = $2 AND status = 'confirmed' AND total_cents = $5 AND (SELECT yes FROM fresh)
      -- Read from the statement's snapshot, so a payment being settled right now is seen and never waited
      -- for (its webhook holds the payment and waits for this order's lock).
      AND NOT EXISTS (
          SELECT 1 FROM payments AS p
          WHERE p.tenant_id = $1 AND p.order_id = $2 AND p.status IN ('pending', 'succeeded')
      )
    FOR SHARE
), claim AS (
    INSERT INTO idempotency_keys
        (tenant_id, key, fingerprint, response_status, response_headers, response_body, created_at, expires_at)
    SELECT $1, $6, $7, 201, $8, $9, now(), now() + $10::interval FROM target
    ON CONFLICT (tenant_id, key) DO NOTHING
    RETURNING 1
), placed AS (
    -- No ON CONFLICT: a payment a concurrent request inserted for this order (after this statement's snapshot)
    -- fails the whole statement on payments_order_open_key once that request commits, the claim included.
    INSERT INTO payments (id, tenant_id, order_id, status, amount_cents, created_at, updated_at)
    SELECT $3, $1, $2, 'pending', $5, $4, $4 FROM claim
    RETURNING id
), requested AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, created_at, payload)
    SELECT $11, 'payments.requested', t.id, t.version, $1, $4, jsonb_build_object(
        'paymentId', p.id, 'orderId', t.id, 'tenantId', $1::text, 'amountCents', $5::int)
    FROM placed AS p CROSS JOIN target AS t
)
SELECT (SELECT yes FROM fresh), EXISTS (SELECT 1 FROM placed);

-- name: select_payment
-- The payment $2 of tenant $1.
SELECT id, tenant_id, order_id, status, amount_cents, failure_reason, created_at, updated_at
FROM payments
WHERE tenant_id = $1 AND id = $2;

-- name: select_open_payment
-- The pending or succeeded payment of order $2 of tenant $1, if any.
SELECT id, tenant_id, order_id, status, amount_cents, failure_reason, created_at, updated_at
FROM payments
WHERE tenant_id = $1 AND order_id = $2 AND status IN ('pending', 'succeeded');

-- name: list_order_payments
-- Whether order $2 of tenant $1 exists, with its payments newest first (one row of NULLs when it has none).
SELECT o.id, p.id, p.tenant_id, p.order_id, p.status, p.amount_cents, p.failure_reason, p.created_at,
       p.updated_at
FROM orders AS o
LEFT JOIN payments AS p ON p.tenant_id = o.tenant_id AND p.order_id = o.id
WHERE o.tenant_id = $1 AND o.id = $2
ORDER BY p.created_at DESC, p.id DESC;

-- name: settle_payment
-- The provider's delivery $1 settling payment $2 (across tenants) as $3, 'succeeded' for amount $4 or 'failed'
-- with reason $5, at $6 (the service's clock, never before the payment's own), with everything it means, in
-- one statement: claims the delivery id storing its answer (the settled payment as the API renders it: the
-- same bytes as schemas.Payment, which a test holds), settles the payment, moves a confirmed order to paid on a
-- success, and writes the case's outbox event $7 (below). Locks the payment, then its order, then claims the
-- delivery id (waiting for a concurrent claim of it to end). No row back, nothing written: the delivery id is
-- claimed already, or the payment is unknown, not pending, or (a success) of another amount. Otherwise the
-- answer, the payment's tenant and order, whether that order was paid (a success for a confirmed order), and
-- whether it is to be cancelled (a failure for a confirmed order: the compensation, which transition_order in
-- sql/orders.sql makes in the same transaction, as every cancellation: the order's state, its event and its
-- stock back).
WITH payment AS (
    SELECT id, tenant_id, order_id, amount_cents, created_at, greatest($6, updated_at) AS settled_at
    FROM payments
    WHERE id = $2 AND status = 'pending' AND ($3 = 'failed' OR amount_cents = $4)
    FOR NO KEY UPDATE
), target AS (
    -- As the lock finds it: a lock waited for returns the row as its holder left it.
    SELECT o.id, o.status AS order_status, o.version,
           greatest(p.settled_at, o.updated_at) AS changed_at
    FROM payment AS p
    JOIN orders AS o ON o.tenant_id = p.tenant_id AND o.id = p.order_id
    FOR NO KEY UPDATE OF o
), claim AS (
    INSERT INTO webhook_deliveries (id, received_at, response_status, response_body)
    SELECT $1, now(), 200, convert_to(format(
        '{"id":"%s","orderId":"%s","tenantId":%s,"amountCents":%s,"status":"%s","failureReason":%s,'
        '"createdAt":"%s","updatedAt":"%s"}',
        p.id, p.order_id, to_json(p.tenant_id), p.amount_cents, $3, coalesce(to_json($5::text)::text, 'null'),
        rfc3339(p.created_at), rfc3339(p.settled_at)), 'UTF8')
    FROM payment AS p CROSS JOIN target
    ON CONFLICT (id) DO NOTHING
    RETURNING response_body
), settled AS (
    UPDATE payments AS p
    SET status = $3, failure_reason = $5, updated_at = s.settled_at
    FROM payment AS s CROSS JOIN claim
    WHERE p.id = s.id
), paid AS (
    -- The success: confirmed -> paid (states.PAY), version + 1.
    UPDATE orders AS o
    SET status = 'paid', version = o.version + 1, updated_at = t.changed_at
    FROM payment AS p CROSS JOIN target AS t CROSS JOIN claim
    WHERE o.tenant_id = p.tenant_id AND o.id = t.id AND status = 'confirmed' AND $3 = 'succeeded'
), event AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, created_at, payload)
    SELECT $7, e.type, t.id, e.version, p.tenant_id, e.at, e.payload
    FROM payment AS p CROSS JOIN target AS t CROSS JOIN claim
    -- The event of each case, as the order stood under its lock. Any other case (a failure, whose event the
    -- cancellation writes; a success for an order closed meanwhile) leaves the order as it is, with no event.
    CROSS JOIN LATERAL (VALUES
        ($3 = 'succeeded' AND t.order_status = 'confirmed', 'orders.paid', t.version + 1, t.changed_at,
         jsonb_build_object('orderId', t.id, 'tenantId', p.tenant_id, 'paymentId', p.id,
                            'amountCents', p.amount_cents, 'paidAt', rfc3339(t.changed_at))),
        -- money taken for an order cancelled meanwhile (its reservation ran out, say) must go back
        ($3 = 'succeeded' AND t.order_status = 'cancelled', 'payments.refund_required', t.version, p.settled_at,
         jsonb_build_object('paymentId', p.id, 'orderId', t.id, 'tenantId', p.tenant_id,
                            'amountCents', p.amount_cents))
    ) AS e (due, type, version, at, payload)
    WHERE e.due
)
SELECT c.response_body, p.tenant_id, p.order_id, $3 = 'succeeded' AND t.order_status = 'confirmed',
       $3 = 'failed' AND t.order_status = 'confirmed'
FROM claim AS c CROSS JOIN payment AS p CROSS JOIN target AS t;

-- name: select_webhook_delivery
-- The answer stored for delivery $1, if any (none while its claim is not committed, or once it is purged), and
-- payment $2 across tenants, if it exists: what a delivery that settle_payment did not settle is answered from.
SELECT d.response_status, d.response_body, p.id, p.tenant_id, p.order_id, p.status, p.amount_cents,
       p.failure_reason, p.created_at, p.updated_at
FROM (SELECT 1) AS one
LEFT JOIN webhook_deliveries AS d ON d.id = $1 AND d.response_status IS NOT NULL
LEFT JOIN payments AS p ON p.id = $2;

-- name: answer_webhook_delivery
-- Claims delivery $1 with answer $2 (status 200): a delivery of a settlement already made, which changes
-- nothing. No row back: the id was claimed meanwhile (after waiting for that claim to end).
INSERT INTO webhook_deliveries (id, received_at, response_status, response_body)
VALUES ($1, now(), 200, $2)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: purge_webhook_deliveries
-- Deletes at most $2 deliveries received more than $1 (interval) ago, oldest first.
DELETE FROM webhook_deliveries
WHERE id IN (
    SELECT id
    FROM webhook_deliveries
    WHERE received_at < now() - $1::interval
    ORDER BY received_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
);

-- name: select_payment_amount
-- The amount of payment $1, across tenants: what the fake provider (orders-svc fake-provider settle) was
-- asked for, when its command line does not say.
SELECT amount_cents
FROM payments
WHERE id = $1;

"""The order's use cases: create (with or without items), confirm, close, cancel, get, list."""

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from .. import errors, states
from ..db import Connection, Pool, connection
from ..errors import ApiError
from ..observability import metrics
from ..pagination import encode_cursor
from ..queries import idempotency
from ..queries import orders as queries
from ..queries.orders import ItemRow, LineRow, Locked, OrderRow, Placement, Target
from ..schemas import Order, OrderItem, OrderPage, encoder, rfc3339
from ..states import OrderStatus, Transition
from ..writes import Idempotency, Reply, perform

Lines = list[tuple[uuid.UUID, int]]  # (product id, quantity) in the order the client listed them
Items = Sequence[ItemRow]  # an order's lines


_STATUS = {status.value: status for status in OrderStatus}


def to_order(row: OrderRow, items: Items = ()) -> Order:
    order = Order(
        id=row.id,
        tenant_id=row.tenant_id,
        status=_STATUS[row.status],  # a dict lookup: Enum's call costs more, once per order of a page
        version=row.version,
        total_cents=row.total_cents,
        created_at=rfc3339(row.created_at),
        updated_at=rfc3339(row.updated_at),
    )
    if row.reserved_until is not None:  # an order created with items: the two keys only it has
        order.items = [
            OrderItem(
                i.product_id, i.sku, i.name, i.unit_price_cents, i.quantity, i.unit_price_cents * i.quantity
            )
            for i in items
        ]
        order.reserved_until = rfc3339(row.reserved_until)
    return order


def order_reply(row: OrderRow, status: int = 200, items: Items = ()) -> Reply:
    return Reply(status, encoder.encode(to_order(row, items)), {"etag": f'"{row.version}"'})


def _created(row: OrderRow, items: Items = ()) -> Reply:
    reply = order_reply(row, 201, items)
    reply.headers["location"] = f"/orders/{row.id}"
    return reply


async def create_order(pool: Pool, tenant: str, idem: Idempotency) -> Reply:
    """A draft order without items. The key's claim, the insert and the stored response are one statement:
    the fast path of `perform`. bench/create_paths.py measures it against perform's generic steps (BEGIN,
    claim, insert, store, COMMIT): 7,400 against 4,100 transactions/s at 32 clients, 1.8x (2026-12-03)."""
    order_id, now = uuid.uuid4(), datetime.now(UTC)
    reply = _created(OrderRow(order_id, tenant, states.INITIAL, 1, None, now, now, None))

    async def create(conn: Connection, idem: Idempotency) -> Reply | None:
        created = await queries.create_order(
            conn, tenant, idem.key, idem.fingerprint, idem.ttl, reply.headers, reply.body, order_id, now
        )
        return reply if created else None

    return await perform(pool, tenant, idem, fused=create)


async def create_order_with_items(
    pool: Pool, tenant: str, idem: Idempotency, lines: Lines, reservation: timedelta
) -> Reply:
    """A draft order whose lines take their stock, all or none, with the key's claim and the stored response.

    The response is rendered from the products as this process last saw them (read first, without a lock,
    when it has not seen one of them); then one statement (the items' fast path of `perform`), run in one
    transaction with the other orders that wait at the same time, of any tenant (Database.batched), locks the
    products in id order, checks that each still is what the response says and has the stock, and claims,
    takes, inserts and stores: a popular product's row is held only while that transaction and its commit
    run inside the database. A product changed in between (price, name) is rendered again as that statement
    found it; a refusal leaves the key unclaimed and the stock untouched.
    """
    order_id = uuid.uuid4()

    async def create(idem: Idempotency) -> Reply | None:
        try:
            ordered = _as_last_seen(tenant, lines)
            for _ in range(_SNAPSHOT_ATTEMPTS):
                if ordered is None:
                    async with connection(pool) as conn:
                        found = await queries.select_lines(
                            conn, tenant, [product_id for product_id, _ in lines]
                        )
                    _remember(tenant, found)
                    ordered = _in_catalogue(lines, {line.product_id: line for line in found})
                now = datetime.now(UTC)
                total = sum(line.unit_price_cents * quantity for line, quantity in ordered)
                if total > MAX_CENTS:
                    raise errors.OUT_OF_RANGE.error()
                row = OrderRow(order_id, tenant, states.INITIAL, 1, total, now, now, now + reservation)
                reply = _created(row, [_item(order_id, line, quantity) for line, quantity in ordered])
                # Placed with the other orders waiting at the same time, of any tenant (one round trip, one
                # commit; each statement on its own tenant's rows); a wait in the products' queue past
                # lock_timeout is 409 request_in_progress, as a wait on a row itself would be answered.
                placement = Placement(
                    (idem.key, idem.fingerprint, idem.ttl), (reply.headers, reply.body), row, ordered
                )
                placed = await pool.batched(queries.create_orders_with_items, placement)
                if placed.claimed:
                    return reply
                if not placed.fresh:
                    return None  # the key exists: perform replays it (or takes it over, when expired)
                found = [locked.line for locked in placed.locked]
                _remember(tenant, found)
                _check_stock(placed.locked)  # raises unless the products changed since they were read
                ordered = _as_found(lines, found)
        except ApiError:
            # A retry of a request that was answered meanwhile replays that answer, whatever the stock is now.
            async with connection(pool) as conn:
                if await idempotency.select_key(conn, tenant, idem.key) is not None:
                    return None
            raise
        raise errors.REQUEST_IN_PROGRESS.error()

    return await perform(pool, tenant, idem, placed=create)


_SNAPSHOT_ATTEMPTS = 3
MAX_CENTS = 2**31 - 1

# The active products as this process last saw them (sku, name, price), by tenant and id: a create renders its
# response from them without reading the products first. The statement checks each against its locked row,
# so a stale entry costs a second attempt, rendered from the rows that attempt found, never a wrong order.
# Bounded: emptied when full.
_seen: dict[tuple[str, uuid.UUID], LineRow] = {}
_SEEN_MAX = 10_000


def _remember(tenant: str, found: list[LineRow]) -> None:
    if len(_seen) + len(found) > _SEEN_MAX:
        _seen.clear()
    for line in found:
        if line.active:
            _seen[tenant, line.product_id] = line
        else:
            _seen.pop((tenant, line.product_id), None)


def _as_last_seen(tenant: str, lines: Lines) -> list[tuple[LineRow, int]] | None:
    """The lines as last seen, or None when one of their products was not seen (or was inactive)."""
    ordered = []
    for product_id, quantity in lines:
        line = _seen.get((tenant, product_id))
        if line is None:
            return None
        ordered.append((line, quantity))
    return ordered


def _as_found(lines: Lines, found: list[LineRow]) -> list[tuple[LineRow, int]] | None:
    """The lines as the statement found their products, or None when it did not find them all (read again)."""
    by_id = {line.product_id: line for line in found}
    if len(by_id) < len(lines) or not all(line.active for line in found):
        return None
    return [(by_id[product_id], quantity) for product_id, quantity in lines]


def _in_catalogue(lines: Lines, found: dict[uuid.UUID, LineRow]) -> list[tuple[LineRow, int]]:
    """The lines as the catalogue has them; unknown products first (422), then inactive ones (409)."""
    for product_id, _ in lines:
        if product_id not in found:
            raise errors.UNKNOWN_PRODUCT.error(productId=str(product_id))
    for product_id, _ in lines:
        if not found[product_id].active:
            raise errors.PRODUCT_INACTIVE.error(productId=str(product_id))
    return [(found[product_id], quantity) for product_id, quantity in lines]


def _check_stock(locked: list[Locked]) -> None:
    """Why the locked products refused the order: inactive, then short lines; returns when neither holds
    (the products changed since they were read: the caller reads them again)."""
    for product in locked:
        if not product.line.active:
            raise errors.PRODUCT_INACTIVE.error(productId=str(product.line.product_id))
    short = [
        {"productId": str(p.line.product_id), "requested": p.quantity, "available": p.stock}
        for p in locked
        if p.stock < p.quantity
    ]
    if short:
        raise errors.INSUFFICIENT_STOCK.error(items=short)


def _item(order_id: uuid.UUID, line: LineRow, quantity: int) -> ItemRow:
    return ItemRow(order_id, line.product_id, line.sku, line.name, line.unit_price_cents, quantity)


async def confirm_order(
    pool: Pool, target: Target, total_cents: int | None, idem: Idempotency | None
) -> Reply:
    """draft -> confirmed, guarded by the version in the UPDATE itself; the total is the client's for an
    order without items, and must be the items' (or left out) for one with items."""

    def refused(current: OrderRow) -> ApiError:
        if current.reserved_until is None:
            return errors.TOTAL_REQUIRED.error()
        return errors.TOTAL_MISMATCH.error(expectedTotalCents=current.total_cents)

    async def confirm(conn: Connection) -> Reply:
        row = await queries.confirm_order(conn, target, total_cents, datetime.now(UTC))
        return await _transitioned(conn, row, target, states.CONFIRM, refused)

    return await perform(pool, target.tenant_id, idem, confirm)


async def close_order(pool: Pool, target: Target, idem: Idempotency | None) -> Reply:
    """confirmed | paid -> closed plus its orders.closed event, in one statement."""

    async def close(conn: Connection) -> Reply:
        row = await queries.transition_order(conn, target, states.CLOSE, uuid.uuid4(), datetime.now(UTC))
        return await _transitioned(conn, row, target, states.CLOSE)

    return await perform(pool, target.tenant_id, idem, close)


async def cancel_order(pool: Pool, target: Target, reason: str | None, idem: Idempotency | None) -> Reply:
    """draft | confirmed -> cancelled plus its orders.cancelled event, and its items' stock back: one
    transaction."""

    async def cancel(conn: Connection) -> Reply:
        row = await queries.cancel_order(conn, target, uuid.uuid4(), datetime.now(UTC), reason)
        return await _transitioned(conn, row, target, states.CANCEL)

    return await perform(pool, target.tenant_id, idem, cancel, atomic=True)


async def _transitioned(
    conn: Connection,
    row: OrderRow | None,
    target: Target,
    transition: Transition,
    refused: Callable[[OrderRow], ApiError] | None = None,
) -> Reply:
    """The reply of a guarded UPDATE, or why it matched nothing, in the contract's order: missing, then
    version, then state, then what else the guard checks (`refused`). Read by the next statement on the same
    connection, which sees at least the change that made the UPDATE miss (each statement takes a new
    snapshot, inside a transaction too)."""
    if row is not None:
        metrics.transition(transition)
        return order_reply(row, items=await _items_of(conn, row))
    current = await queries.select_order(conn, target.tenant_id, target.order_id)
    if current is None:
        raise errors.ORDER_NOT_FOUND.error()
    if target.versions is not None and current.version not in target.versions:
        raise errors.STALE_VERSION.error(currentVersion=current.version)
    if current.status in transition.sources and refused is not None:
        raise refused(current)
    # Also when the order left the state the UPDATE saw before this read: it is refused as it now stands.
    raise errors.INVALID_TRANSITION.error(action=transition.action, currentStatus=current.status)


async def _items_of(conn: Connection, row: OrderRow) -> list[ItemRow]:
    if row.reserved_until is None:
        return []
    return await queries.select_order_items(conn, row.tenant_id, [row.id])


async def get_order(pool: Pool, tenant: str, order_id: uuid.UUID) -> Reply:
    async with connection(pool) as conn:
        row = await queries.select_order(conn, tenant, order_id)
        if row is None:
            raise errors.ORDER_NOT_FOUND.error()
        return order_reply(row, items=await _items_of(conn, row))


async def require_order(pool: Pool, tenant: str, order_id: uuid.UUID) -> None:
    """404 unless the tenant has the order."""
    async with connection(pool) as conn:
        if await queries.select_order(conn, tenant, order_id) is None:
            raise errors.ORDER_NOT_FOUND.error()


async def list_orders(pool: Pool, tenant: str, after: tuple[datetime, uuid.UUID] | None, limit: int) -> bytes:
    """One page, newest first; fetching one extra row tells whether another page follows. The items of the
    page's orders that have some come in one more statement."""
    async with connection(pool) as conn:
        rows = await queries.list_orders(conn, tenant, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        with_items = [r.id for r in rows if r.reserved_until is not None]
        items = await queries.select_order_items(conn, tenant, with_items) if with_items else ()
    cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
    if not items:  # the common page: no order with items, no grouping
        return encoder.encode(OrderPage(items=[to_order(r) for r in rows], next_cursor=cursor))
    by_order: dict[uuid.UUID, list[ItemRow]] = {}
    for item in items:
        by_order.setdefault(item.order_id, []).append(item)
    page = OrderPage(items=[to_order(r, by_order.get(r.id, ())) for r in rows], next_cursor=cursor)
    return encoder.encode(page)

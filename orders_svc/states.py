"""The order's state machine, written down once.

The SQL guards stay explicit statements (`UPDATE … WHERE status = 'draft'`); this table is what they are
checked against (tests read each guard's statuses back from the SQL), what the 409 messages name, what the
OpenAPI status enum lists and what the `orders_status_check` constraint must allow.
"""

from enum import StrEnum
from typing import NamedTuple


class OrderStatus(StrEnum):
    DRAFT = "draft"
    CONFIRMED = "confirmed"
    PAID = "paid"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class Transition(NamedTuple):
    action: str  # the verb of the endpoint, as the 409 message says it: "cannot close an order that is draft"
    sources: frozenset[OrderStatus]
    target: OrderStatus


def _transition(action: str, sources: set[OrderStatus], target: OrderStatus) -> Transition:
    return Transition(action, frozenset(sources), target)


S = OrderStatus
CONFIRM = _transition("confirm", {S.DRAFT}, S.CONFIRMED)
# By a payment's success (POST /webhooks/payments); a payment's failure cancels a confirmed order (CANCEL).
PAY = _transition("pay", {S.CONFIRMED}, S.PAID)
CLOSE = _transition("close", {S.CONFIRMED, S.PAID}, S.CLOSED)
CANCEL = _transition("cancel", {S.DRAFT, S.CONFIRMED}, S.CANCELLED)
# The `reason` of an orders.cancelled event when the service cancels an order itself (a client's cancel gives
# its own, or none): its payment failed, or its reservation ran out (housekeeping).
PAYMENT_FAILED = "payment_failed"
RESERVATION_EXPIRED = "reservation_expired"

TRANSITIONS = (CONFIRM, PAY, CLOSE, CANCEL)
INITIAL = S.DRAFT
# States no transition leaves.
FINAL = frozenset(S) - {source for t in TRANSITIONS for source in t.sources}

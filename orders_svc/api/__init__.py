"""The HTTP API, a module per resource: each operation declared once (`routing.Operation`) by its handler.

A handler reads what its `Call` holds, calls one use case and returns its reply. `OPERATIONS` is the route
table: app.py serves it and openapi.py documents it.
"""

from . import operations, orders, payments, products

OPERATIONS = (*orders.OPERATIONS, *payments.OPERATIONS, *products.OPERATIONS, *operations.OPERATIONS)

"""What operators watch: Prometheus metrics (`metrics`), per-tenant rate limits (`limits`) and OpenTelemetry
traces (`tracing`, when the `otel` extra is installed and OTEL_* variables configure it).

The request path calls in through `middleware.RequestContext`, `routing.endpoint` (the limit), `db.Database`
(pool waits) and `writes.perform` (idempotency outcomes); each hook is a few attribute reads when off.
"""

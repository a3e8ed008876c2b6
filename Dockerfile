# syntax=docker/dockerfile:1
# The service image: the installed wheel carries sql/ and migrations/, so nothing else from the checkout is needed.
# One image for every role: `orders-svc serve` (the default), `migrate`, `relay --publisher nats`, `purge`, …
FROM python:3.12.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY orders_svc orders_svc
COPY sql sql
COPY migrations migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12.12-slim
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl
# Logs are JSON when stderr is not a terminal; the service logs a warning that dev auth mode (X-Tenant-Id
# trusted as sent) listens on a non-loopback address: set ORDERS_AUTH_MODE=jwt outside development.
ENV PYTHONUNBUFFERED=1
# nobody: the service writes nothing to the image's file system.
USER 65534:65534
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --retries=5 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["orders-svc", "serve", "--host", "0.0.0.0", "--port", "8000"]

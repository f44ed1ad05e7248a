"""``/health/liveness``, ``/health/readiness`` (database, shared store, registry), ``/metrics``.

Neither health check calls a model backend (K8s probes must not cascade backend outages).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from starlette.responses import Response

from service.auth import bearer_token
from service.deps import ComponentsDep

router = APIRouter(tags=["health"])


@router.get("/health/liveness")
async def liveness() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health")
async def health(c: ComponentsDep) -> Response:
    """vLLM convention: 200 with an empty body when ready, 503 otherwise."""
    return Response(status_code=200 if c.status.get("ready") else 503)


@router.get("/health/readiness")
async def readiness(c: ComponentsDep) -> JSONResponse:
    db_ok = await c.db.ping()
    store_ok = await c.store.ping()
    # A write found the database locked a moment ago (service.middleware.CatchAll): reads
    # still pass the ping, but this replica cannot take writes; let the balancer skip it.
    db_busy = float(c.status.get("db_busy_until", 0.0)) > time.monotonic()
    ready = bool(c.status.get("ready")) and db_ok and store_ok and not db_busy
    body = {
        "status": "ready" if ready else "not_ready",
        "database": ("busy" if db_busy else "ok") if db_ok else "down",
        "store": ("redis" if c.settings.redis_url else "memory") + (" ok" if store_ok else " down"),
        "models": len(c.engine.pool),
        "registry_version": c.engine.pool.version,
        "routers": sorted(c.engine.scorers),
        "cooling_down": c.health.cooling_models(),
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(
    c: ComponentsDep, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Prometheus metrics; the admin token is needed unless ``JUNCTION_METRICS_PUBLIC`` is set
    (model names, traffic and spend are not for every client)."""
    if not c.settings.metrics_public:
        c.auth.admin(bearer_token(authorization))
    return Response(c.metrics.render(), media_type=c.metrics.content_type)

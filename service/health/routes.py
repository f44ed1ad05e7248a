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
from service.deps import (
    AuthDep,
    DatabaseDep,
    EngineDep,
    HealthDep,
    MetricsDep,
    SettingsDep,
    StatusDep,
    StoreDep,
)

router = APIRouter(tags=["health"])


@router.get("/health/liveness")
async def liveness() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health")
async def health(status: StatusDep) -> Response:
    """vLLM convention: 200 with an empty body when ready, 503 otherwise."""
    return Response(status_code=200 if status.get("ready") else 503)


@router.get("/health/readiness")
async def readiness(
    status: StatusDep,
    db: DatabaseDep,
    store: StoreDep,
    settings: SettingsDep,
    engine: EngineDep,
    health: HealthDep,
) -> JSONResponse:
    db_ok = await db.ping()
    store_ok = await store.ping()
    # A write found the database locked a moment ago (service.middleware.CatchAll): reads
    # still pass the ping, but this replica cannot take writes; let the balancer skip it.
    db_busy = float(status.get("db_busy_until", 0.0)) > time.monotonic()
    ready = bool(status.get("ready")) and db_ok and store_ok and not db_busy
    body = {
        "status": "ready" if ready else "not_ready",
        "database": ("busy" if db_busy else "ok") if db_ok else "down",
        "store": ("redis" if settings.redis_url else "memory") + (" ok" if store_ok else " down"),
        "models": len(engine.pool),
        "registry_version": engine.pool.version,
        "routers": sorted(engine.scorers),
        "cooling_down": health.cooling_models(),
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(
    settings: SettingsDep,
    auth: AuthDep,
    metrics: MetricsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Prometheus metrics; the admin token is needed unless ``JUNCTION_METRICS_PUBLIC`` is set
    (model names, traffic and spend are not for every client)."""
    if not settings.metrics_public:
        auth.admin(bearer_token(authorization))
    return Response(metrics.render(), media_type=metrics.content_type)

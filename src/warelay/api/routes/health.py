"""Health, readiness, metrics: for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from warelay.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """The process can serve: its database answers."""
    if await runtime.ready():
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "unavailable", "detail": "database not reachable"}, status_code=503)


@router.get("/api/health")
async def api_health(runtime: RuntimeDep) -> JSONResponse:
    """Health in seed 004's shape."""
    healthy = await runtime.ready()
    return JSONResponse(
        {
            "success": healthy,
            "message": "warelay is running" if healthy else "warelay cannot reach its database",
            "data": {
                "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "status": "healthy" if healthy else "unhealthy",
            },
        },
        status_code=200 if healthy else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(runtime.metrics.exposed), media_type=CONTENT_TYPE_LATEST)

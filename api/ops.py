"""Operational endpoints."""

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from api.problems import PROBLEM_SCHEMA
from tripmail.errors import FieldError, Unavailable
from tripmail.metrics import counted

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: str = Field(description='"ok", or "error: " and what the client saw')
    database: str = Field(description='"ok", or "error: " and the kind of error')


class Live(BaseModel):
    status: Literal["ok"]


def _check_dependencies(request: Request) -> dict[str, str]:
    """Redis and the database, each "ok" or "error: " and what went wrong."""
    checks = {"redis": "ok", "database": "ok"}
    try:
        request.app.state.redis.ping()
    except RedisError as exc:
        checks["redis"] = f"error: {exc}"
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    return checks


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis or the database does not answer: it says which"}},
)
def healthz(request: Request) -> JSONResponse:
    """200 when Redis and the database both answer; 503 naming the one that does not."""
    checks = _check_dependencies(request)
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ok" if healthy else "unavailable", **checks}, status_code=200 if healthy else 503)


@router.get("/livez", response_model=Live)
async def livez() -> Live:
    """200 while the process serves requests; it reads neither Redis nor the database, so an outage of either
    does not get every api process restarted (that is /readyz's to report). On the event loop, so a loop that
    stopped answering fails it."""
    return Live(status="ok")


NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "Redis or the database does not answer: `errors` names each one, with what went wrong",
        "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
    }
}


@router.get("/readyz", response_model=Health, responses=NOT_READY)
def readyz(request: Request) -> Health:
    """200 when Redis and the database both answer, so the api can accept events; 503 problem+json naming each
    one that does not."""
    checks = _check_dependencies(request)
    down = [FieldError(field=name, message=state) for name, state in checks.items() if state != "ok"]
    if down:
        names = " and ".join("Redis" if error["field"] == "redis" else "the database" for error in down)
        verb = "do" if len(down) > 1 else "does"
        raise Unavailable(f"not ready: {names} {verb} not answer", field=down[0]["field"], errors=down)
    return Health(status="ok", **checks)


# Mounted unless TRIPMAIL_METRICS_PORT moves the metrics to a port of their own (tripmail.metrics.serve_api_metrics).
metrics_router = APIRouter(include_in_schema=False)


@metrics_router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format: the api's counters (of every process, with --workers), then the queue and messages
    as they are now."""

    def exposition() -> bytes:
        return generate_latest(counted()) + generate_latest(request.app.state.metrics)

    return Response(await run_in_threadpool(exposition), media_type=CONTENT_TYPE_LATEST)


BENCH_BASELINE_QUEUE = "tripmail:bench:baseline"

# Mounted only when TRIPMAIL_BENCH_BASELINE is set: production never serves it.
bench_router = APIRouter(include_in_schema=False)


@bench_router.post("/bench/baseline/events", status_code=202)
async def bench_baseline_event(request: Request) -> Response:
    """The ingest floor for `make bench`: LPUSH the raw body to Redis and answer, nothing else."""
    request.app.state.redis.lpush(BENCH_BASELINE_QUEUE, await request.body())
    return Response(status_code=202)

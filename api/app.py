"""create_app(settings): the lifespan owns the engine, the Redis client, the Celery producer, the Enqueuer and the
rate limiter."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from redis import Redis
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from api import bounce_webhooks, history, native, ops, suppressions, templates, unsubscribe, webhook_endpoints
from api.auth import TokenCache
from api.dialects import DIALECTS
from api.enqueue import Enqueuer
from api.lookups import SetupCache
from api.problems import on_database_error, on_http_error, on_model_error, on_tripmail_error, on_validation_error
from api.ratelimit import RateLimiter, RedisPause, RevocationMarkers
from tripmail.config import Settings, get_settings
from tripmail.db import make_sessionmaker
from tripmail.errors import TripmailError
from tripmail.metrics import StateCollector
from tripmail.queue import make_publisher

YOUNG_COLLECTION_OBJECTS = 10_000


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sessions = make_sessionmaker(settings)
        app.state.settings = settings
        app.state.sessions = sessions
        app.state.redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.api_redis_timeout_s,
            socket_connect_timeout=settings.api_redis_timeout_s,
            decode_responses=True,
        )
        app.state.celery = make_publisher(settings)
        app.state.setup = SetupCache(ttl_s=settings.setup_cache_s, max_entries=settings.lookup_cache_entries)
        app.state.tokens = TokenCache(ttl_s=settings.setup_cache_s, max_entries=settings.lookup_cache_entries)
        app.state.redis_pause = RedisPause()
        app.state.revocations = RevocationMarkers(app.state.redis, app.state.redis_pause)
        app.state.limiter = (
            RateLimiter(
                app.state.redis,
                per_minute=settings.rate_limit_per_minute,
                burst=settings.rate_limit_burst,
                pause=app.state.redis_pause,
            )
            if settings.rate_limit_per_minute
            else None
        )
        app.state.enqueuer = Enqueuer(app.state.redis, app.state.celery, wait_s=settings.enqueue_wait_s)
        app.state.metrics = CollectorRegistry(auto_describe=True)
        app.state.metrics.register(StateCollector(app.state.redis, sessions))
        # What is alive now (modules, the app, the clients) lives as long as the process: frozen, the garbage
        # collector's full passes skip it. Under load the objects of requests in flight reach the oldest
        # generation often enough to start full passes again and again, and each one scans the whole heap: a
        # large share of the api's CPU per event (bench/results.md, What the code's shape rests on).
        gc.collect()
        gc.freeze()
        # A young collection every 700 objects (the default) runs many times a second under load and moves the
        # objects of requests in flight on to older generations; reference counting frees them once answered.
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_OBJECTS)
        yield
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        await app.state.enqueuer.close()
        app.state.redis.close()
        sessions.kw["bind"].dispose()

    app = FastAPI(
        title="Tripmail",
        summary="Turns application events into email.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_exception_handler(TripmailError, on_tripmail_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ValidationError, on_model_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(OperationalError, on_database_error)
    app.include_router(native.router)
    app.include_router(ops.router)
    if settings.metrics_port is None:
        app.include_router(ops.metrics_router)
    if settings.bench_baseline:
        app.include_router(ops.bench_router)
    app.include_router(unsubscribe.router)
    app.include_router(templates.router)
    app.include_router(history.router)
    app.include_router(suppressions.router)
    app.include_router(bounce_webhooks.router)
    app.include_router(webhook_endpoints.router)
    for dialect in DIALECTS:
        app.include_router(dialect.router)
    serve_both_slash_forms(app)
    return app


def serve_both_slash_forms(app: FastAPI) -> None:
    """Serve a path that only its other slash form routes as that form, and refuse a path that neither routes in
    the envelope of the dialect it is under.

    Starlette redirects such a path with 307, and behind a TLS proxy the redirect points at plain http, where
    clients drop the Authorization header. Checked after every route is added, so routes added later are covered.
    """
    router = app.router
    router.redirect_slashes = False
    envelopes = {f"{dialect.router.prefix}/": dialect.render_error for dialect in DIALECTS}

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and path != "/":
            other = {**scope, "path": path.rstrip("/") if path.endswith("/") else f"{path}/"}
            if any(route.matches(other)[0] != Match.NONE for route in router.routes):
                await router.app(other, receive, send)
                return
        for prefix, render_error in envelopes.items():
            if f"{path}/".startswith(prefix):
                scope.setdefault("state", {})["render_error"] = render_error
        await router.not_found(scope, receive, send)

    router.default = not_found

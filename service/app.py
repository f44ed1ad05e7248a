"""The app factory: ``create_app(settings)`` builds the FastAPI app; nothing happens at import.

Long-lived collaborators (database, shared store, budget ledgers, encoder, LOCUS, upstream
client, routing engine) are built in the lifespan and put on ``app.state``, one attribute each;
routes reach them through the typed dependencies of ``service.deps`` (overridable in tests).

Usage::

    app = create_app(Settings(database_url="sqlite:///junction.db"))
    uvicorn.run(app)
    uvicorn.run("service.app:app_from_env", factory=True, workers=2)   # what junction serve runs
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from service.accounting import Accounting
from service.admin.routers_service import RouterRegistry
from service.auth import Authenticator
from service.budget_ledger import DatabaseBudgetLedger
from service.catalog import VERSION_KEY, Catalog
from service.db.engine import Database
from service.handlers import install_handlers
from service.metrics import Metrics
from service.middleware import BodySizeLimit, CatchAll, InputGuard
from service.openai.serving import OpenAIServing
from service.request_log import RequestLog
from service.routing.embedder import BatchingEmbedder, TextEncoder
from service.routing.engine import RoutingEngine
from service.routing.registry import load_pool, read_version
from service.routing.scoring import LocusScorer, ModelEmbedder, Scorer
from service.settings import Settings
from service.state import BudgetLedgerStore, StateStore, make_store
from service.upstream.client import UpstreamClient
from service.upstream.health import BackendHealth
from service.upstream.replay import ReplayBackend

log = logging.getLogger(__name__)
# A nominal price for the local CPU model (electricity, not an API bill): cheapest in the pool.
SMOLLM2_PRICE_PER_MTOK = 0.01


@dataclass
class Components:
    """Everything a request may need, built once per app."""

    settings: Settings
    db: Database
    store: StateStore
    budgets: BudgetLedgerStore
    auth: Authenticator
    metrics: Metrics
    embedder: BatchingEmbedder
    locus: ModelEmbedder
    engine: RoutingEngine
    upstream: UpstreamClient
    health: BackendHealth
    replay: ReplayBackend
    accounting: Accounting
    catalog: Catalog
    openai: OpenAIServing
    routers: RouterRegistry
    requests_log: RequestLog
    status: dict[str, Any] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def reload(self) -> None:
        """Swap in the registry's current pool and routers; drop cached key lookups."""
        pool = await load_pool(self.db)
        locus = LocusScorer(self.locus)
        await asyncio.to_thread(locus.prepare, pool)  # off the event loop, before it serves
        scorers: dict[str, Scorer] = {locus.name: locus}
        scorers.update(await self.routers.load_active())
        self.engine.swap(pool=pool, scorers=scorers)
        self.auth.invalidate()
        self.metrics.registry_models.set(len(pool))

    async def current_version(self) -> int:
        if self.settings.redis_url:
            v = await self.store.get_int(VERSION_KEY)
            if v is not None:
                return v
        async with self.db.session() as s:
            v = await read_version(s)
        await self.store.set_int_max(VERSION_KEY, v)
        return v


def default_encoder(settings: Settings) -> TextEncoder:
    from training.encoder import QueryEncoder

    return QueryEncoder(
        backend=settings.encoder_backend, max_seq_length=settings.encoder_max_tokens
    )


def default_locus(settings: Settings) -> ModelEmbedder:
    """The LOCUS embedder: the bundle's, an explicit checkpoint, or the constant fallback."""
    from pathlib import Path

    from training.locus import LocusEmbedder

    if settings.locus_checkpoint is not None:
        return LocusEmbedder.from_checkpoint(settings.locus_checkpoint)
    from training.bundle import DEFAULT_BUNDLE

    folder = Path(settings.bundle_path or DEFAULT_BUNDLE)
    if (folder / "locus.pt").exists():
        return LocusEmbedder.from_checkpoint(folder / "locus.pt")
    from service.routing.fallback import ConstantEmbedder

    log.warning("no LOCUS checkpoint found (%s): routing by each model's mean score", folder)
    return ConstantEmbedder()


async def _watch_registry(c: Components) -> None:
    """Poll the registry version; reload when another replica (or this one) changed it."""
    while True:
        await asyncio.sleep(c.settings.registry_poll_s)
        try:
            v = await c.current_version()
            if v != c.engine.pool.version:
                await c.reload()
        except Exception:
            log.exception("registry poll failed")


async def _probe_backends(c: Components) -> None:
    """Active health probes: a cooling backend that answers /models is taken back early."""
    interval = c.settings.health_probe_interval_s
    while True:
        await asyncio.sleep(interval)
        for name in c.health.cooling_models():
            entry = c.engine.pool.get(name)
            if (
                entry is not None
                and entry.backend.kind == "openai"
                and await c.upstream.probe(entry.backend)
            ):
                c.health.record_success(name)
        c.metrics.cooling.set(len(c.health.cooling_models()))


def build_components(
    settings: Settings,
    *,
    encoder: TextEncoder | None = None,
    locus: ModelEmbedder | None = None,
    replay: ReplayBackend | None = None,
) -> Components:
    db = Database(settings.database_url)
    store = make_store(settings.redis_url, prefix=settings.redis_prefix)
    # Budget ledgers must outlive a restart and be shared by replicas: in Redis when there is
    # one, else in the database (the in-process store would lose them).
    budgets: BudgetLedgerStore = store if settings.redis_url else DatabaseBudgetLedger(db)
    metrics = Metrics()
    enc = encoder or default_encoder(settings)
    embedder = BatchingEmbedder(
        enc,
        max_batch=settings.embed_batch_max,
        wait_ms=settings.embed_batch_wait_ms,
        cache_size=settings.embed_cache_size,
        on_batch=metrics.embed_batch.observe,
    )
    loc = locus or default_locus(settings)
    scorer = LocusScorer(loc)
    engine = RoutingEngine(
        embedder=embedder,
        scorers={scorer.name: scorer},
        default_router=scorer.name,
        default_lambda=settings.default_lambda,
        margin=settings.stickiness_margin,
        calibration_queries=settings.calibration_queries,
        calibration_size=settings.calibration_size,
    )
    upstream = UpstreamClient(
        connect_timeout_s=settings.upstream_connect_timeout_s,
        read_timeout_s=settings.upstream_read_timeout_s,
        max_connections=settings.upstream_max_connections,
    )
    health = BackendHealth(
        cooldown_s=settings.cooldown_s, after_failures=settings.cooldown_after_failures
    )
    rep = replay or ReplayBackend()
    accounting = Accounting(store=store, db=db)
    requests_log = RequestLog(db)
    auth = Authenticator(db, admin_token=settings.admin_token.get_secret_value())
    holder: dict[str, Components] = {}

    async def on_change() -> None:
        await holder["c"].reload()

    catalog = Catalog(
        db=db,
        store=store,
        locus=loc,
        encode=lambda texts: enc.encode(texts),
        on_change=on_change,
        min_evaluations=settings.min_evaluations,
        max_embed_evaluations=settings.max_embed_evaluations,
    )
    openai = OpenAIServing(
        engine=engine,
        upstream=upstream,
        health=health,
        replay=rep,
        accounting=accounting,
        store=store,
        metrics=metrics,
        settings=settings,
        budgets=budgets,
        requests_log=requests_log,
    )
    c = Components(
        settings=settings,
        db=db,
        store=store,
        budgets=budgets,
        auth=auth,
        metrics=metrics,
        embedder=embedder,
        locus=loc,
        engine=engine,
        upstream=upstream,
        health=health,
        replay=rep,
        accounting=accounting,
        catalog=catalog,
        openai=openai,
        routers=RouterRegistry(db),
        requests_log=requests_log,
    )
    holder["c"] = c
    return c


def create_app(
    settings: Settings,
    *,
    encoder: TextEncoder | None = None,
    locus: ModelEmbedder | None = None,
    replay: ReplayBackend | None = None,
    on_startup: Callable[[Components], Any] | None = None,
) -> FastAPI:
    """The gateway app. ``encoder``/``locus``/``replay`` replace the real ones (tests, benches)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        c = build_components(settings, encoder=encoder, locus=locus, replay=replay)
        app.state.components = c  # the lifespan's own handle (background tasks, middleware)
        # Routes reach each collaborator through service.deps, which reads these.
        for name in (
            "settings",
            "db",
            "store",
            "auth",
            "metrics",
            "engine",
            "locus",
            "health",
            "accounting",
            "catalog",
            "openai",
            "routers",
            "status",
        ):
            setattr(app.state, name, getattr(c, name))
        if settings.auto_migrate:
            await c.db.migrate()
        await c.upstream.start()
        await c.embedder.start()
        await asyncio.to_thread(c.embedder.warm)
        if settings.load_default_bundle:
            from service.pool import seed_default_pool

            await seed_default_pool(c.catalog, settings.bundle_path)
        for name, what in (await c.catalog.reembed_stale()).items():
            log.warning("model %s: %s", name, what)
        if settings.smollm2_url:
            from service.llama_server import ALIAS
            from service.pool import onboard_live_model

            await onboard_live_model(
                c.catalog,
                name=ALIAS,
                url=settings.smollm2_url,
                backend_model=ALIAS,
                input_per_mtok=SMOLLM2_PRICE_PER_MTOK,
                output_per_mtok=SMOLLM2_PRICE_PER_MTOK,
            )
        await c.reload()
        if on_startup is not None:
            result = on_startup(c)
            if asyncio.iscoroutine(result):
                await result
        c.tasks.append(asyncio.create_task(_watch_registry(c), name="registry-watch"))
        if settings.health_probe_interval_s > 0:
            c.tasks.append(asyncio.create_task(_probe_backends(c), name="backend-probes"))
        c.status["ready"] = True
        try:
            yield
        finally:
            c.status["ready"] = False
            for t in c.tasks:
                t.cancel()
            for t in c.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await c.openai.drain()
            await c.requests_log.drain()
            await c.accounting.drain()
            await c.embedder.close()
            await c.upstream.close()
            await c.store.close()
            await c.db.dispose()

    app = FastAPI(
        title="Junction",
        version="0.1.0",
        description="An OpenAI-compatible LLM router with LOCUS model embeddings.",
        lifespan=lifespan,
    )
    install_handlers(app)
    # Outermost last: CatchAll -> BodySizeLimit -> InputGuard -> the routes.
    app.add_middleware(InputGuard)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAll)
    from service.openapi_doc import install_openapi

    install_openapi(app)
    from service.admin.routes import router as admin_router
    from service.dashboard.routes import router as dashboard_router
    from service.evaluations.routes import router as evaluations_router
    from service.health.routes import router as health_router
    from service.openai.routes import router as openai_router
    from service.route.routes import router as route_router

    app.include_router(openai_router)
    app.include_router(route_router)
    app.include_router(admin_router)
    app.include_router(evaluations_router)
    app.include_router(health_router)
    app.include_router(dashboard_router)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``junction serve``): every worker builds its app from the environment,
    with its math threads limited first (``Settings.compute_threads``)."""
    from service.threads import limit_compute_threads

    settings = Settings()
    limit_compute_threads(settings.compute_threads)
    return create_app(settings)

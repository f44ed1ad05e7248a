"""FastAPI dependencies as ``Annotated`` aliases, one per collaborator.

The lifespan (``service.app.create_app``) builds every long-lived collaborator once and puts it
on ``app.state`` under the name below; routes take only what they use, through these aliases,
so a test replaces one with ``app.dependency_overrides[get_engine] = lambda: fake``. Nothing here
imports the app factory. The getters are ``async def`` though none awaits: FastAPI runs a plain
``def`` dependency in its thread pool, a hand-off per dependency per request (``junction bench
gateway``, concurrency 1, median of 3-4 runs: concrete-model overhead p50 1.07 ms with plain
``def`` getters, 0.67 ms with these; docs/issue12_bench.md).

Usage::

    @router.get("/v1/models")
    async def list_models(serving: OpenAIServingDep, principal: ClientDep) -> ModelList: ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from service.accounting import Accounting
from service.admin.routers_service import RouterRegistry
from service.auth import Authenticator, Principal, bearer_token
from service.catalog import Catalog
from service.db.engine import Database
from service.db.repositories import EvaluationRepository, KeyRepository, ModelRepository
from service.evaluations.serving import EvaluationsServing
from service.metrics import Metrics
from service.openai.serving import OpenAIServing
from service.routing.engine import RoutingEngine
from service.routing.scoring import ModelEmbedder
from service.settings import Settings
from service.state import StateStore
from service.upstream.health import BackendHealth


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_database(request: Request) -> Database:
    return request.app.state.db


async def get_session(
    db: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    async with db.session() as s:
        yield s


async def get_store(request: Request) -> StateStore:
    return request.app.state.store


async def get_auth(request: Request) -> Authenticator:
    return request.app.state.auth


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_engine(request: Request) -> RoutingEngine:
    return request.app.state.engine


async def get_locus(request: Request) -> ModelEmbedder:
    return request.app.state.locus


async def get_health(request: Request) -> BackendHealth:
    return request.app.state.health


async def get_accounting(request: Request) -> Accounting:
    return request.app.state.accounting


async def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


async def get_openai(request: Request) -> OpenAIServing:
    return request.app.state.openai


async def get_routers(request: Request) -> RouterRegistry:
    return request.app.state.routers


async def get_models(db: Annotated[Database, Depends(get_database)]) -> ModelRepository:
    return ModelRepository(db)


async def get_keys(db: Annotated[Database, Depends(get_database)]) -> KeyRepository:
    return KeyRepository(db)


async def get_evaluation_repo(
    db: Annotated[Database, Depends(get_database)],
) -> EvaluationRepository:
    return EvaluationRepository(db)


async def get_evaluations(
    repo: Annotated[EvaluationRepository, Depends(get_evaluation_repo)],
    models: Annotated[ModelRepository, Depends(get_models)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[StateStore, Depends(get_store)],
) -> EvaluationsServing:
    return EvaluationsServing(
        repo=repo, models=models, catalog=catalog, settings=settings, store=store
    )


async def get_status(request: Request) -> dict[str, Any]:
    """The replica's status flags (``ready``, ``db_busy_until``), shared with the middleware."""
    return request.app.state.status


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
StoreDep = Annotated[StateStore, Depends(get_store)]
AuthDep = Annotated[Authenticator, Depends(get_auth)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[RoutingEngine, Depends(get_engine)]
LocusDep = Annotated[ModelEmbedder, Depends(get_locus)]
HealthDep = Annotated[BackendHealth, Depends(get_health)]
AccountingDep = Annotated[Accounting, Depends(get_accounting)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
OpenAIServingDep = Annotated[OpenAIServing, Depends(get_openai)]
RoutersDep = Annotated[RouterRegistry, Depends(get_routers)]
StatusDep = Annotated[dict[str, Any], Depends(get_status)]
# Repositories wrap the one Database: cheap, so built per request (and overridable per test).
ModelsDep = Annotated[ModelRepository, Depends(get_models)]
KeysDep = Annotated[KeyRepository, Depends(get_keys)]
EvaluationRepoDep = Annotated[EvaluationRepository, Depends(get_evaluation_repo)]
EvaluationsServingDep = Annotated[EvaluationsServing, Depends(get_evaluations)]


async def client_principal(
    auth: AuthDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """A client API key or the admin token (accepted wherever a client key is)."""
    return await auth.client(bearer_token(authorization, x_api_key))


async def admin_principal(
    auth: AuthDep, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    return auth.admin(bearer_token(authorization))


async def admitted_client(
    principal: Annotated[Principal, Depends(client_principal)], accounting: AccountingDep
) -> Principal:
    """``client_principal`` plus the key's request rate, checked before the body is read: a
    rate-limited key is refused without parsing a byte of it."""
    await accounting.admit_request(principal)
    return principal


ClientDep = Annotated[Principal, Depends(client_principal)]
AdmittedClientDep = Annotated[Principal, Depends(admitted_client)]
AdminDep = Annotated[Principal, Depends(admin_principal)]

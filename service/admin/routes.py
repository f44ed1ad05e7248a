"""Admin routes (``Authorization: Bearer $JUNCTION_ADMIN_TOKEN``)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from service.admin.protocol import (
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeysPublic,
    KeyUpdate,
    ModelCreate,
    ModelPublic,
    ModelsPublic,
    ModelUpdate,
    Neighbor,
    NeighborsPublic,
    PortfolioPublic,
    PortfolioRequest,
    Pricing,
    RouterActivate,
    RouterPublic,
    RoutersPublic,
)
from service.admin.serving import portfolio
from service.auth import new_key
from service.catalog import ModelSpec
from service.db.models import ApiKeyRow, ModelRow, from_blob
from service.deps import (
    CatalogDep,
    DatabaseDep,
    EngineDep,
    KeysDep,
    LocusDep,
    ModelsDep,
    RoutersDep,
    admin_principal,
)
from service.errors import InvalidRequest, ModelNotFound, UnprocessableEntity
from service.evaluations.rows import to_input
from training.selection import distances_to
from training.selection import neighbours as nearest

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(admin_principal)])


def model_public(
    row: ModelRow, *, version: int | None = None, routable: bool | None = None
) -> ModelPublic:
    backend = {"kind": row.backend_kind, "url": row.backend_url, "model": row.backend_model}
    if row.meta and row.meta.get("dataset"):
        backend["dataset"] = row.meta["dataset"]
    return ModelPublic(
        name=row.name,
        backend=backend,
        pricing=Pricing(input_per_mtok=row.input_per_mtok, output_per_mtok=row.output_per_mtok),
        embedding=[float(v) for v in from_blob(row.embedding)],
        num_evaluations=row.num_evaluations,
        enabled=row.enabled,
        created_at=row.created_at,
        registry_version=version,
        routable=routable,
    )


# --- models
@router.post("/models", status_code=201)
async def create_model(body: ModelCreate, catalog: CatalogDep, engine: EngineDep) -> ModelPublic:
    """Register a model: LOCUS embeds it from its evaluations in one pass; routable at once."""
    b = body.backend
    spec = ModelSpec(
        name=body.name,
        backend_kind=b.kind,
        backend_url=b.url,
        backend_model=b.model or (body.name if b.kind == "replay" else None),
        backend_api_key=b.api_key,
        input_per_mtok=body.pricing.input_per_mtok,
        output_per_mtok=body.pricing.output_per_mtok,
        meta={"dataset": b.dataset} if b.dataset else {},
    )
    row = await catalog.register(spec, [to_input(e) for e in body.evaluations])
    pool = engine.pool
    return model_public(row, version=pool.version, routable=pool.get(row.name) is not None)


@router.get("/models")
async def list_models(models: ModelsDep) -> ModelsPublic:
    rows = await models.list_all()
    return ModelsPublic(data=[model_public(r) for r in rows], count=len(rows))


@router.get("/models/{name:path}/neighbors")
async def neighbors(
    name: str, engine: EngineDep, k: Annotated[int, Query(ge=1, le=100)] = 5
) -> NeighborsPublic:
    """The k nearest models in LOCUS space: the fallback order and a similarity map."""
    pool = engine.pool
    me = pool.get(name)
    if me is None:
        raise ModelNotFound(f"model {name!r} is not registered (or disabled)", param="name")
    others = [n for n in pool.names if n != name]
    if not others:
        return NeighborsPublic(model=name, neighbors=[])
    # The fallback order's rule (training.selection.neighbours), over [me, *others].
    Z = pool.embeddings([name, *others])
    dist = distances_to(Z, Z[0])
    cos = (Z @ Z[0]) / (np.linalg.norm(Z, axis=1) * np.linalg.norm(Z[0]) + 1e-12)
    return NeighborsPublic(
        model=name,
        neighbors=[
            Neighbor(model=others[j - 1], distance=float(dist[j]), cosine=float(cos[j]))
            for j in nearest(Z, 0, k)
        ],
    )


@router.get("/models/{name:path}")
async def get_model(name: str, models: ModelsDep) -> ModelPublic:
    return model_public(await models.get(name))


@router.patch("/models/{name:path}")
async def patch_model(
    name: str, body: ModelUpdate, catalog: CatalogDep, engine: EngineDep
) -> ModelPublic:
    changes: dict[str, object] = {}
    if body.backend is not None:
        changes.update(
            backend_kind=body.backend.kind,
            backend_url=body.backend.url,
            backend_model=body.backend.model,
            backend_api_key=body.backend.api_key,
        )
    if body.pricing is not None:
        changes.update(
            input_per_mtok=body.pricing.input_per_mtok, output_per_mtok=body.pricing.output_per_mtok
        )
    if body.enabled is not None:
        changes["enabled"] = body.enabled
    if not changes:
        raise UnprocessableEntity("nothing to change: give backend, pricing or enabled")
    row = await catalog.update(name, changes)
    return model_public(row, version=engine.pool.version)


@router.delete("/models/{name:path}", status_code=204)
async def delete_model(name: str, catalog: CatalogDep) -> Response:
    await catalog.delete(name)
    return Response(status_code=204)


@router.post("/portfolio")
async def make_portfolio(
    body: PortfolioRequest, engine: EngineDep, db: DatabaseDep, locus: LocusDep
) -> PortfolioPublic:
    """k models that cover LOCUS space (greedy k-center), from the best predicted model on."""
    return await portfolio(body, pool=engine.pool, locus=locus, db=db)


# --- keys
def key_public(row: ApiKeyRow) -> KeyPublic:
    return KeyPublic(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
        budget_usd=row.budget_usd,
        spent_usd=row.spent_usd,
        created_at=row.created_at,
        revoked=row.revoked_at is not None,
        trusted=bool(row.trusted),
    )


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, keys: KeysDep) -> KeyCreated:
    key = new_key()
    row = await keys.create(
        name=body.name,
        key=key,
        requests_per_minute=body.requests_per_minute,
        tokens_per_minute=body.tokens_per_minute,
        budget_usd=body.budget_usd,
        trusted=body.trusted,
    )
    return KeyCreated(**key_public(row).model_dump(), key=key)


@router.get("/keys")
async def list_keys(keys: KeysDep) -> KeysPublic:
    return KeysPublic(data=[key_public(r) for r in await keys.list_all()])


@router.patch("/keys/{key_id}")
async def update_key(
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: KeyUpdate,
    catalog: CatalogDep,
    keys: KeysDep,
) -> KeyPublic:
    """Trust or distrust a key's evaluation rows; the models they cover are re-embedded."""
    row, changed, models, version = await keys.set_trusted(key_id=key_id, trusted=body.trusted)
    await catalog.publish(version)  # cached principals carry the flag: drop them
    if changed and models:
        await catalog.refresh_embeddings(models)
    return key_public(row)


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(key_id: int, catalog: CatalogDep, keys: KeysDep) -> Response:
    await catalog.publish(await keys.revoke(key_id=key_id))
    return Response(status_code=204)


# --- routers
def router_public(r: object) -> RouterPublic:
    return RouterPublic.model_validate(r, from_attributes=True)


@router.get("/routers")
async def list_routers(routers: RoutersDep) -> RoutersPublic:
    return RoutersPublic(data=[router_public(r) for r in await routers.list()])


@router.post("/routers", status_code=201)
async def upload_router(
    request: Request,
    routers: RoutersDep,
    name: Annotated[str, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")],
) -> RouterPublic:
    """Upload a router checkpoint (the request body, application/octet-stream) as a new version."""
    data = await request.body()
    if not data:
        raise InvalidRequest("empty body: send the checkpoint bytes")
    if name == "locus":
        raise UnprocessableEntity("'locus' is the built-in router")
    return router_public(await routers.upload(name, data))


@router.post("/routers/activate")
async def activate_router(
    body: RouterActivate, catalog: CatalogDep, routers: RoutersDep
) -> RouterPublic:
    row, version = await routers.activate(body.name, body.version)
    await catalog.publish(version)
    return router_public(row)

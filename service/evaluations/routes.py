"""``POST /v1/evaluations`` (Idempotency-Key), ``GET`` and ``DELETE`` of the caller's own logs.

Acknowledged only after the rows are committed. A retried post with the same Idempotency-Key and
body returns the stored acknowledgement and stores nothing (also when the first post was stored
just before a crash, or runs concurrently: a unique index on (owner, key) settles who stores);
the same key with another body is a 409. Registered models are re-embedded by LOCUS before the
acknowledgement, from the operator's rows and trusted keys' rows only (``Catalog.shared_rows``):
an untrusted key's rows are stored and serve that client and federation, but never change what
other tenants are routed by. Ingest cost is capped per post and per key per minute (settings).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from service.accounting import WINDOW_S
from service.auth import Principal
from service.catalog import EvalInput
from service.db.models import EvaluationBatchRow, EvaluationRow, ModelRow, to_blob
from service.deps import (
    AdmittedClientDep,
    CatalogDep,
    ClientDep,
    DatabaseDep,
    SettingsDep,
    StoreDep,
)
from service.errors import Conflict, NotFound, RateLimited, UnprocessableEntity
from service.evaluations.protocol import (
    BatchAck,
    EvaluationBatch,
    EvaluationPublic,
    EvaluationsPublic,
)
from service.handlers import validation_response
from service.jsonbody import bad_string, parse_json_object
from service.settings import Settings
from service.state import StateStore

INT_ID = 2**31 - 1  # ids are INTEGER columns (32-bit on PostgreSQL)

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])


_PENDING = "refresh_pending"  # in a stored ack: committed, shared embeddings not yet refreshed


def _ack(
    batch_id: int,
    accepted: int,
    refreshed: dict[str, int],
    unregistered: list[str],
    *,
    shared: bool,
) -> dict[str, Any]:
    return BatchAck(
        batch_id=batch_id,
        accepted=accepted,
        models_refreshed=refreshed,
        unregistered_models=unregistered,
        shared=shared,
    ).model_dump()


async def _admit_rows(
    settings: Settings, store: StateStore, principal: Principal, rows: int
) -> None:
    """The ingest cost caps: rows per post, and rows per minute for a client key."""
    cap = settings.evaluations_max_rows_per_post
    if rows > cap:
        raise UnprocessableEntity(
            f"{rows} rows in one post; at most {cap} (split the log into several posts)",
            param="rows",
        )
    if principal.key_id is None:
        return
    per_min = settings.evaluations_rows_per_minute
    n = await store.incr_window(f"evrows:{principal.key_id}", rows, window_s=WINDOW_S)
    if n > per_min:
        await store.incr_window(f"evrows:{principal.key_id}", -rows, window_s=WINDOW_S)
        raise RateLimited(
            f"evaluation ingest limit of {per_min} rows/min exceeded",
            headers={"Retry-After": str(WINDOW_S)},
        )


@router.post(
    "",
    status_code=201,
    # The body is parsed by hand (parse_json_object first); the document still describes it.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EvaluationBatch.model_json_schema()}},
        }
    },
)
async def post_evaluations(
    request: Request,
    catalog: CatalogDep,
    db: DatabaseDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: AdmittedClientDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    if not idempotency_key:
        raise UnprocessableEntity("the Idempotency-Key header is required", param="Idempotency-Key")
    if bad_string(idempotency_key):
        raise UnprocessableEntity("the Idempotency-Key is not valid text", param="Idempotency-Key")
    raw = await request.body()
    digest = hashlib.sha256(raw).hexdigest()
    body = parse_json_object(raw)
    rows = body.get("rows")
    await _admit_rows(settings, store, principal, len(rows) if isinstance(rows, list) else 0)
    try:
        batch = EvaluationBatch.model_validate(body)
    except ValidationError as exc:
        return validation_response(request.url.path, list(exc.errors()))
    owner = principal.scope

    async def stored() -> EvaluationBatchRow | None:
        async with db.session() as s:
            q = select(EvaluationBatchRow).where(
                EvaluationBatchRow.owner == owner,
                EvaluationBatchRow.idempotency_key == idempotency_key,
            )
            return (await s.execute(q)).scalar_one_or_none()

    async def replay(prev: EvaluationBatchRow) -> Response:
        if prev.request_sha256 != digest:
            raise Conflict(
                "Idempotency-Key already used with a different body", param="Idempotency-Key"
            )
        ack = dict(prev.response or {})
        if not ack or ack.pop(_PENDING, False):
            # Committed, but the gateway stopped before refreshing (or before storing the ack):
            # finish the job now, so the retry gets the real acknowledgement.
            ack = await finish(prev.id, batch, shared=principal.trusted)
        return JSONResponse(ack, status_code=201, headers={"Idempotency-Replayed": "true"})

    async def finish(batch_id: int, batch: EvaluationBatch, *, shared: bool) -> dict[str, Any]:
        models = sorted({r.model for r in batch.rows})
        async with db.session() as s:
            registered = set(
                (await s.execute(select(ModelRow.name).where(ModelRow.name.in_(models)))).scalars()
            )
        refreshed = await catalog.refresh_embeddings(sorted(registered)) if shared else {}
        ack = _ack(
            batch_id,
            len(batch.rows),
            refreshed,
            [m for m in models if m not in registered],
            shared=shared,
        )
        async with db.session() as s:
            row = await s.get(EvaluationBatchRow, batch_id)
            if row is not None:
                row.response = ack
                await s.commit()
        return ack

    prev = await stored()
    if prev is not None:
        return await replay(prev)
    evals = [EvalInput(score=r.score, query=r.query, embedding=r.embedding) for r in batch.rows]
    X = await catalog.embed_inputs(evals)
    async with db.session() as s:
        b = EvaluationBatchRow(
            key_id=principal.key_id,
            owner=owner,
            idempotency_key=idempotency_key,
            request_sha256=digest,
            response={},
        )
        s.add(b)
        try:
            await s.flush()
        except IntegrityError:
            # A concurrent post with this key committed first: answer with its batch.
            await s.rollback()
            prev = await stored()
            if prev is None:
                raise
            return await replay(prev)
        s.add_all(
            EvaluationRow(
                model_name=r.model,
                key_id=principal.key_id,
                batch_id=b.id,
                query_id=r.query_id,
                query=r.query,
                embedding=to_blob(X[i]),
                score=r.score,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                cost_usd=r.cost_usd,
                category=r.category,
            )
            for i, r in enumerate(batch.rows)
        )
        # Stored with the rows, so a retry after a crash here still learns the batch id.
        b.response = {
            **_ack(b.id, len(batch.rows), {}, [], shared=principal.trusted),
            _PENDING: True,
        }
        await s.commit()
        batch_id = b.id
    return JSONResponse(await finish(batch_id, batch, shared=principal.trusted), status_code=201)


@router.get("")
async def list_evaluations(
    db: DatabaseDep,
    principal: ClientDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int, Query(ge=0, le=INT_ID)] = 0,
    model: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
) -> EvaluationsPublic:
    """The caller's own rows (the admin token sees every row), oldest first, by id cursor."""
    q = select(EvaluationRow).where(EvaluationRow.id > after)
    if principal.key_id is not None:
        q = q.where(EvaluationRow.key_id == principal.key_id)
    if model:
        q = q.where(EvaluationRow.model_name == model)
    async with db.session() as s:
        rows = (await s.execute(q.order_by(EvaluationRow.id).limit(limit))).scalars().all()
    return EvaluationsPublic(
        data=[
            EvaluationPublic(
                id=r.id,
                batch_id=r.batch_id,
                query_id=r.query_id,
                query=r.query,
                model=r.model_name,
                score=r.score,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                cost_usd=r.cost_usd,
                category=r.category,
            )
            for r in rows
        ]
    )


@router.delete("/batches/{batch_id}", status_code=204)
async def delete_batch(
    batch_id: Annotated[int, Path(ge=1, le=INT_ID)],
    catalog: CatalogDep,
    db: DatabaseDep,
    principal: ClientDep,
) -> Response:
    """Delete one of the caller's batches; its models are re-embedded without it."""
    async with db.session() as s:
        b = await s.get(EvaluationBatchRow, batch_id)
        if b is None or (principal.key_id is not None and b.key_id != principal.key_id):
            raise NotFound(f"no batch {batch_id} of yours")
        models = sorted(
            set(
                (
                    await s.execute(
                        select(EvaluationRow.model_name).where(EvaluationRow.batch_id == batch_id)
                    )
                ).scalars()
            )
        )
        await s.execute(delete(EvaluationRow).where(EvaluationRow.batch_id == batch_id))
        await s.delete(b)
        await s.commit()
    if principal.trusted:  # an untrusted key's rows never were behind a shared embedding
        await catalog.refresh_embeddings(models)
    return Response(status_code=204)

"""``POST /v1/evaluations`` (Idempotency-Key), ``GET`` and ``DELETE`` of the caller's own logs.

Acknowledged only after the rows are committed. A retried post with the same Idempotency-Key and
body returns the stored acknowledgement and stores nothing; the same key with another body is a
409. Affected registered models are re-embedded by LOCUS before the acknowledgement.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from service.catalog import EvalInput
from service.db.models import EvaluationBatchRow, EvaluationRow, ModelRow, to_blob
from service.deps import ClientDep, ComponentsDep
from service.errors import Conflict, NotFound, UnprocessableEntity
from service.evaluations.protocol import (
    BatchAck,
    EvaluationBatch,
    EvaluationPublic,
    EvaluationsPublic,
)
from service.handlers import validation_response
from service.openai.serving import parse_json_object

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])


@router.post("", status_code=201)
async def post_evaluations(
    request: Request,
    c: ComponentsDep,
    principal: ClientDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    if not idempotency_key:
        raise UnprocessableEntity("the Idempotency-Key header is required", param="Idempotency-Key")
    raw = await request.body()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        batch = EvaluationBatch.model_validate(parse_json_object(raw))
    except ValidationError as exc:
        return validation_response(request.url.path, list(exc.errors()))

    async def stored() -> EvaluationBatchRow | None:
        async with c.db.session() as s:
            q = select(EvaluationBatchRow).where(
                EvaluationBatchRow.idempotency_key == idempotency_key
            )
            q = q.where(
                EvaluationBatchRow.key_id == principal.key_id
                if principal.key_id is not None
                else EvaluationBatchRow.key_id.is_(None)
            )
            return (await s.execute(q)).scalar_one_or_none()

    def replay(prev: EvaluationBatchRow) -> Response:
        if prev.request_sha256 != digest:
            raise Conflict(
                "Idempotency-Key already used with a different body", param="Idempotency-Key"
            )
        return JSONResponse(
            prev.response, status_code=201, headers={"Idempotency-Replayed": "true"}
        )

    prev = await stored()
    if prev is not None:
        return replay(prev)
    evals = [EvalInput(score=r.score, query=r.query, embedding=r.embedding) for r in batch.rows]
    X = await c.catalog.embed_inputs(evals)
    models = sorted({r.model for r in batch.rows})
    async with c.db.session() as s:
        registered = set(
            (await s.execute(select(ModelRow.name).where(ModelRow.name.in_(models)))).scalars()
        )
        b = EvaluationBatchRow(
            key_id=principal.key_id,
            idempotency_key=idempotency_key,
            request_sha256=digest,
            response={},
        )
        s.add(b)
        try:
            await s.flush()
        except IntegrityError:
            await s.rollback()
            prev = await stored()
            if prev is None:
                raise
            return replay(prev)
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
        await s.commit()
        batch_id = b.id
    refreshed = await c.catalog.refresh_embeddings(sorted(registered))
    ack = BatchAck(
        batch_id=batch_id,
        accepted=len(batch.rows),
        models_refreshed=refreshed,
        unregistered_models=[m for m in models if m not in registered],
    ).model_dump()
    async with c.db.session() as s:
        row = await s.get(EvaluationBatchRow, batch_id)
        assert row is not None
        row.response = ack
        await s.commit()
    return JSONResponse(ack, status_code=201)


@router.get("")
async def list_evaluations(
    c: ComponentsDep,
    principal: ClientDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int, Query(ge=0)] = 0,
    model: str | None = None,
) -> EvaluationsPublic:
    """The caller's own rows (the admin token sees every row), oldest first, by id cursor."""
    q = select(EvaluationRow).where(EvaluationRow.id > after)
    if principal.key_id is not None:
        q = q.where(EvaluationRow.key_id == principal.key_id)
    if model:
        q = q.where(EvaluationRow.model_name == model)
    async with c.db.session() as s:
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
async def delete_batch(batch_id: int, c: ComponentsDep, principal: ClientDep) -> Response:
    """Delete one of the caller's batches; its models are re-embedded without it."""
    async with c.db.session() as s:
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
    await c.catalog.refresh_embeddings(models)
    return Response(status_code=204)

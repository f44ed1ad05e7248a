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
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.deps import AdmittedClientDep, ClientDep, EvaluationsServingDep
from service.errors import UnprocessableEntity
from service.evaluations.protocol import EvaluationBatch, EvaluationsPublic
from service.handlers import validation_response
from service.jsonbody import bad_string, parse_json_object

INT_ID = 2**31 - 1  # ids are INTEGER columns (32-bit on PostgreSQL)

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])


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
    serving: EvaluationsServingDep,
    principal: AdmittedClientDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    if not idempotency_key:
        raise UnprocessableEntity("the Idempotency-Key header is required", param="Idempotency-Key")
    if bad_string(idempotency_key):
        raise UnprocessableEntity("the Idempotency-Key is not valid text", param="Idempotency-Key")
    raw = await request.body()
    body = parse_json_object(raw)
    rows = body.get("rows")
    await serving.admit_rows(principal, len(rows) if isinstance(rows, list) else 0)
    try:
        batch = EvaluationBatch.model_validate(body)
    except ValidationError as exc:
        return validation_response(request.url.path, list(exc.errors()))
    ack, replayed = await serving.ingest(
        batch,
        principal=principal,
        idempotency_key=idempotency_key,
        digest=hashlib.sha256(raw).hexdigest(),
    )
    headers = {"Idempotency-Replayed": "true"} if replayed else None
    return JSONResponse(ack, status_code=201, headers=headers)


@router.get("")
async def list_evaluations(
    serving: EvaluationsServingDep,
    principal: ClientDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int, Query(ge=0, le=INT_ID)] = 0,
    model: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
) -> EvaluationsPublic:
    """The caller's own rows (the admin token sees every row), oldest first, by id cursor."""
    return await serving.page(principal, limit=limit, after=after, model=model)


@router.delete("/batches/{batch_id}", status_code=204)
async def delete_batch(
    batch_id: Annotated[int, Path(ge=1, le=INT_ID)],
    serving: EvaluationsServingDep,
    principal: ClientDep,
) -> Response:
    """Delete one of the caller's batches; its models are re-embedded without it."""
    await serving.delete_batch(batch_id, principal)
    return Response(status_code=204)

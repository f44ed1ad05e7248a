"""Routes of the OpenAI surface: thin, each calls one serving method."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import AdmittedClientDep, ClientDep, OpenAIServingDep
from service.openai.protocol import ChatCompletionRequest, CompletionRequest, ModelList

router = APIRouter(tags=["openai"])

_CHAT_DOC = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": ChatCompletionRequest.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
            }
        }
    }
}


@router.post("/v1/chat/completions", openapi_extra=_CHAT_DOC)
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(
    request: Request, serving: OpenAIServingDep, principal: AdmittedClientDep
) -> Response:
    """OpenAI chat completions; ``model: "junction/auto"`` routes, a model name bypasses."""
    raw = await request.body()
    return await serving.create(raw, request.headers, principal, kind="chat")


_COMPLETION_DOC = {
    "requestBody": {
        "content": {"application/json": {"schema": CompletionRequest.model_json_schema()}}
    }
}


@router.post("/v1/completions", openapi_extra=_COMPLETION_DOC)
@router.post("/completions", include_in_schema=False)
async def completions(
    request: Request, serving: OpenAIServingDep, principal: AdmittedClientDep
) -> Response:
    """OpenAI (legacy) text completions, routed the same way."""
    raw = await request.body()
    return await serving.create(raw, request.headers, principal, kind="completion")


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(serving: OpenAIServingDep, principal: ClientDep) -> ModelList:  # noqa: ARG001
    """The virtual ``junction/auto`` and every registered model."""
    return serving.models()

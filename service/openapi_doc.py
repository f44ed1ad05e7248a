"""The OpenAPI document, with every ``$ref`` resolvable.

Routes that parse their own bodies (the OpenAI surface, ``/v1/route``) describe them through
``openapi_extra`` with a pydantic model's JSON schema; its ``$defs`` stayed inside the request
body while its ``$ref``s pointed at ``#/components/schemas/...`` or ``#/$defs/...``, so the
document did not validate (issue 13). Here those ``$defs`` move into ``components.schemas`` and
every reference points there.

Usage::

    install_openapi(app)   # once, in the app factory
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_PREFIXES = ("#/$defs/", "#/components/schemas/")


def _hoist(node: Any, defs: dict[str, Any]) -> Any:
    """Copy ``node`` with nested ``$defs`` collected into ``defs`` and refs re-pointed."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "$defs" and isinstance(v, dict):
                for name, schema in v.items():
                    defs[name] = _hoist(schema, defs)
                continue
            if k == "$ref" and isinstance(v, str):
                for prefix in _PREFIXES:
                    if v.startswith(prefix):
                        v = "#/components/schemas/" + v[len(prefix) :]
                out[k] = v
                continue
            out[k] = _hoist(v, defs)
        return out
    if isinstance(node, list):
        return [_hoist(x, defs) for x in node]
    return node


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    defs: dict[str, Any] = {}
    doc["paths"] = _hoist(doc.get("paths", {}), defs)
    components = doc.setdefault("components", {})
    schemas = _hoist(components.get("schemas", {}), defs)
    for name, schema in defs.items():
        schemas.setdefault(name, schema)
    components["schemas"] = schemas
    return doc


def install_openapi(app: FastAPI) -> None:
    cache: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        if "doc" not in cache:
            cache["doc"] = build_openapi(app)
        return cache["doc"]

    app.openapi = openapi  # type: ignore[method-assign]

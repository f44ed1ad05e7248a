"""FastAPI dependencies as ``Annotated`` aliases; long-lived objects come from ``app.state``.

Routes reach every collaborator through these, so tests can use ``app.dependency_overrides``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request

from service.auth import Principal, bearer_token
from service.settings import Settings

if TYPE_CHECKING:
    from service.app import Components


def get_components(request: Request) -> Components:
    return request.app.state.components


ComponentsDep = Annotated["Components", Depends(get_components)]


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.components.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def client_principal(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """A client API key or the admin token (accepted wherever a client key is)."""
    comps = request.app.state.components
    return await comps.auth.client(bearer_token(authorization, x_api_key))


async def admin_principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    comps = request.app.state.components
    return comps.auth.admin(bearer_token(authorization))


async def admitted_client(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """``client_principal`` plus the key's request rate, checked before the body is read: a
    rate-limited key is refused without parsing a byte of it."""
    principal = await client_principal(request, authorization, x_api_key)
    await request.app.state.components.accounting.admit_request(principal)
    return principal


ClientDep = Annotated[Principal, Depends(client_principal)]
AdmittedClientDep = Annotated[Principal, Depends(admitted_client)]
AdminDep = Annotated[Principal, Depends(admin_principal)]

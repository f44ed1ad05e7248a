"""Publish a trained router to the gateway: upload it as a new version through the admin API
(``POST /admin/routers?name=``, the checkpoint bytes) and optionally activate it
(``POST /admin/routers/activate``). Requests then pick it with ``routing.router = name``.

Usage::

    publish(Path("router.pt"), gateway="http://127.0.0.1:8000", name="fed-mlp", token=t)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


class PublishError(RuntimeError):
    """The gateway refused the router; the message carries its error envelope."""


def _check(r: httpx.Response, what: str) -> dict[str, Any]:
    if r.status_code >= 400:
        try:
            detail = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            detail = r.text[:300]
        raise PublishError(f"{what} failed with HTTP {r.status_code}: {detail}")
    body: dict[str, Any] = r.json()
    return body


def publish(
    router_path: Path,
    *,
    gateway: str,
    name: str,
    token: str,
    activate: bool = True,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Upload (and activate) a router checkpoint; returns the gateway's router record."""
    data = Path(router_path).read_bytes()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=gateway, timeout=timeout, headers=headers) as client:
        row = _check(
            client.post(
                "/admin/routers",
                params={"name": name},
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            ),
            "upload",
        )
        if activate:
            row = _check(
                client.post(
                    "/admin/routers/activate", json={"name": name, "version": row["version"]}
                ),
                "activation",
            )
    return row

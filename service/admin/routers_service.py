"""Uploaded router artifacts: stored in the database, loaded once per content hash.

A router artifact is a self-describing checkpoint (``training.checkpoint``'s format) from
``training.routers``; ``training.routers.load_router`` rebuilds it from the bytes. Each router
name has at most one active version; active routers are offered by name (``routing.router``)
for the models they were trained on. LOCUS stays the default: it scores every registered model.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from sqlalchemy import func, select, update

from service.db.engine import Database
from service.db.models import RouterRow
from service.errors import NotFound, UnprocessableEntity
from service.routing.registry import bump_version
from service.routing.scoring import RouterScorer, Scorer

log = logging.getLogger(__name__)


def artifact_kind(data: bytes) -> str:
    """The checkpoint's ``kind``; 422 when the bytes are not a self-describing checkpoint."""
    from training.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(data)
    except ValueError as exc:
        raise UnprocessableEntity(f"not a router checkpoint: {exc}") from None
    if not isinstance(ckpt.get("kind"), str):
        raise UnprocessableEntity("a router checkpoint is a dict with a string 'kind'")
    return str(ckpt["kind"])


def load_router_bytes(data: bytes) -> Any:
    try:
        from training.routers.base import load_router
    except ImportError as exc:
        raise UnprocessableEntity(f"router loading is not available: {exc}") from None
    return load_router(data)


class RouterRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._loaded: dict[str, Any] = {}  # sha256 -> router

    async def upload(self, name: str, data: bytes) -> RouterRow:
        kind = await asyncio.to_thread(artifact_kind, data)
        async with self.db.session() as s:
            last = (
                await s.execute(select(func.max(RouterRow.version)).where(RouterRow.name == name))
            ).scalar_one_or_none()
            row = RouterRow(
                name=name,
                version=int(last or 0) + 1,
                kind=kind,
                sha256=hashlib.sha256(data).hexdigest(),
                artifact=data,
                active=False,
            )
            s.add(row)
            await s.commit()
        return row

    async def list(self) -> list[RouterRow]:
        async with self.db.session() as s:
            return list(
                (
                    await s.execute(select(RouterRow).order_by(RouterRow.name, RouterRow.version))
                ).scalars()
            )

    async def activate(self, name: str, version: int | None) -> tuple[RouterRow, int]:
        async with self.db.session() as s:
            q = select(RouterRow).where(RouterRow.name == name)
            q = (
                q.where(RouterRow.version == version)
                if version
                else q.order_by(RouterRow.version.desc())
            )
            row = (await s.execute(q.limit(1))).scalar_one_or_none()
            if row is None:
                raise NotFound(f"router {name!r} version {version or 'latest'} does not exist")
            router = await asyncio.to_thread(load_router_bytes, row.artifact)
            self._loaded[row.sha256] = router
            await s.execute(update(RouterRow).where(RouterRow.name == name).values(active=False))
            row.active = True
            v = await bump_version(s)
            await s.commit()
        return row, v

    async def load_active(self) -> dict[str, Scorer]:
        async with self.db.session() as s:
            rows = (
                (await s.execute(select(RouterRow).where(RouterRow.active.is_(True))))
                .scalars()
                .all()
            )
        out: dict[str, Scorer] = {}
        for row in rows:
            router = self._loaded.get(row.sha256)
            if router is None:
                try:
                    router = await asyncio.to_thread(load_router_bytes, row.artifact)
                except UnprocessableEntity as exc:
                    log.warning(
                        "router %s v%d not loadable: %s", row.name, row.version, exc.message
                    )
                    continue
                self._loaded[row.sha256] = router
            out[row.name] = RouterScorer(row.name, router)
        return out

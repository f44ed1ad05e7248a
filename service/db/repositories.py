"""Data access for the admin and evaluation routes: each method one short transaction.

Routes never hold a session or build a statement; they receive a repository through a typed
dependency (``service.deps``: ``KeysDep``, ``ModelsDep``, ``EvaluationRepoDep``) and call one
method. A write that changes what replicas cache (a key's trust, a revocation) bumps the registry
version in the same transaction and returns it, so the caller publishes it after the commit
(``Catalog.publish``). The model registry's writes stay in ``service.catalog``, which also
embeds; this module holds its reads.

Usage::

    keys = KeyRepository(db)
    row = await keys.create(name="acme", key=new_key(), trusted=False)
    version = await keys.revoke(key_id=row.id)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy.typing as npt
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth import hash_key
from service.db.engine import Database
from service.db.models import ApiKeyRow, EvaluationBatchRow, EvaluationRow, ModelRow
from service.errors import ModelNotFound, NotFound
from service.evaluations.rows import EvalInput, to_orm
from service.routing.registry import bump_version


async def model_by_name(s: AsyncSession, name: str) -> ModelRow:
    """The model row named ``name`` in session ``s``; 404 (``ModelNotFound``) when absent."""
    row = (await s.execute(select(ModelRow).where(ModelRow.name == name))).scalar_one_or_none()
    if row is None:
        raise ModelNotFound(f"model {name!r} does not exist", param="name")
    return row


class ModelRepository:
    """Reads of the model registry (its writes are ``Catalog``'s)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_all(self) -> Sequence[ModelRow]:
        async with self.db.session() as s:
            return (await s.execute(select(ModelRow).order_by(ModelRow.name))).scalars().all()

    async def get(self, name: str) -> ModelRow:
        async with self.db.session() as s:
            return await model_by_name(s, name)

    async def registered(self, names: Sequence[str]) -> set[str]:
        """Which of ``names`` are registered models."""
        async with self.db.session() as s:
            q = select(ModelRow.name).where(ModelRow.name.in_(list(names)))
            return set((await s.execute(q)).scalars())


class KeyRepository:
    """Client API keys: create, list, trust, revoke."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        *,
        name: str,
        key: str,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        budget_usd: float | None = None,
        trusted: bool = False,
    ) -> ApiKeyRow:
        """Store a new key (its SHA-256 and 8-character prefix, never the key itself)."""
        row = ApiKeyRow(
            name=name,
            prefix=key[:8],
            key_hash=hash_key(key),
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            budget_usd=budget_usd,
            spent_usd=0.0,
            trusted=trusted,
        )
        async with self.db.session() as s:
            s.add(row)
            await s.commit()
        return row

    async def list_all(self) -> Sequence[ApiKeyRow]:
        async with self.db.session() as s:
            return (await s.execute(select(ApiKeyRow).order_by(ApiKeyRow.id))).scalars().all()

    async def set_trusted(
        self, *, key_id: int, trusted: bool
    ) -> tuple[ApiKeyRow, bool, list[str], int]:
        """Set a key's trust flag: (row, whether it changed, the models its evaluation rows
        cover, the bumped registry version). Cached principals carry the flag, hence the bump."""
        async with self.db.session() as s:
            row = await s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"no key with id {key_id}")
            changed = bool(row.trusted) != trusted
            row.trusted = trusted
            q = select(EvaluationRow.model_name).where(EvaluationRow.key_id == key_id)
            models = sorted(set((await s.execute(q)).scalars()))
            version = await bump_version(s)
            await s.commit()
        return row, changed, models, version

    async def revoke(self, *, key_id: int) -> int:
        """Revoke an active key; the bumped registry version (404 when none is active)."""
        async with self.db.session() as s:
            res = await s.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            if res.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"no active key with id {key_id}")
            version = await bump_version(s)
            await s.commit()
        return version


class EvaluationRepository:
    """Posted evaluation batches (the idempotency records) and their rows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def stored_batch(self, *, owner: str, idempotency_key: str) -> EvaluationBatchRow | None:
        async with self.db.session() as s:
            q = select(EvaluationBatchRow).where(
                EvaluationBatchRow.owner == owner,
                EvaluationBatchRow.idempotency_key == idempotency_key,
            )
            return (await s.execute(q)).scalar_one_or_none()

    async def add_batch(
        self,
        *,
        owner: str,
        key_id: int | None,
        idempotency_key: str,
        request_sha256: str,
        rows: Sequence[tuple[str, EvalInput]],
        embeddings: npt.NDArray[Any],
        pending_ack: Callable[[int], dict[str, Any]],
    ) -> int | None:
        """Store a batch and its rows ((model, evaluation), query embeddings [n, D]) in one
        transaction; the new batch id, or None when a concurrent post with the same
        (owner, Idempotency-Key) committed first. ``pending_ack(batch_id)`` is stored with the
        rows, so a retry after a crash before the acknowledgement still learns the batch id."""
        async with self.db.session() as s:
            b = EvaluationBatchRow(
                key_id=key_id,
                owner=owner,
                idempotency_key=idempotency_key,
                request_sha256=request_sha256,
                response={},
            )
            s.add(b)
            try:
                await s.flush()
            except IntegrityError:
                await s.rollback()
                return None
            s.add_all(
                to_orm(e, embeddings[i], model=model, key_id=key_id, batch_id=b.id)
                for i, (model, e) in enumerate(rows)
            )
            b.response = pending_ack(b.id)
            await s.commit()
            return b.id

    async def save_ack(self, batch_id: int, ack: dict[str, Any]) -> None:
        async with self.db.session() as s:
            row = await s.get(EvaluationBatchRow, batch_id)
            if row is not None:
                row.response = ack
                await s.commit()

    async def page(
        self, *, key_id: int | None, after: int, model: str | None, limit: int
    ) -> Sequence[EvaluationRow]:
        """Rows with id > ``after``, oldest first; ``key_id`` None reads every key's rows."""
        q = select(EvaluationRow).where(EvaluationRow.id > after)
        if key_id is not None:
            q = q.where(EvaluationRow.key_id == key_id)
        if model:
            q = q.where(EvaluationRow.model_name == model)
        async with self.db.session() as s:
            return (await s.execute(q.order_by(EvaluationRow.id).limit(limit))).scalars().all()

    async def delete_batch(self, batch_id: int, *, key_id: int | None) -> list[str]:
        """Delete a batch with its rows; the models they covered. 404 when the batch does not
        exist or (``key_id`` not None) belongs to another key."""
        async with self.db.session() as s:
            b = await s.get(EvaluationBatchRow, batch_id)
            if b is None or (key_id is not None and b.key_id != key_id):
                raise NotFound(f"no batch {batch_id} of yours")
            q = select(EvaluationRow.model_name).where(EvaluationRow.batch_id == batch_id)
            models = sorted(set((await s.execute(q)).scalars()))
            await s.execute(delete(EvaluationRow).where(EvaluationRow.batch_id == batch_id))
            await s.delete(b)
            await s.commit()
        return models

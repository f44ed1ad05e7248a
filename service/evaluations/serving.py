"""``/v1/evaluations`` past parsing: the ingest caps, the idempotent store, reads and deletes.

The route parses and validates the body; :class:`EvaluationsServing` does the rest through an
``EvaluationRepository`` (the batch and its rows in one transaction) and the ``Catalog`` (query
embeddings, re-embedding registered models). The idempotency rules are the route module's
docstring (``service.evaluations.routes``).

Usage::

    serving = EvaluationsServing(repo=repo, models=models, catalog=catalog, settings=settings,
                                 store=store)
    ack, replayed = await serving.ingest(batch, principal=p, idempotency_key=k, digest=sha)
"""

from __future__ import annotations

from typing import Any

from service.accounting import WINDOW_S
from service.auth import Principal
from service.catalog import Catalog
from service.db.models import EvaluationBatchRow
from service.db.repositories import EvaluationRepository, ModelRepository
from service.errors import Conflict, RateLimited, UnprocessableEntity
from service.evaluations.protocol import BatchAck, EvaluationBatch, EvaluationsPublic
from service.evaluations.rows import to_input, to_public
from service.settings import Settings
from service.state import StateStore

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


class EvaluationsServing:
    """Stores, lists and deletes a caller's evaluation logs (one instance per request)."""

    def __init__(
        self,
        *,
        repo: EvaluationRepository,
        models: ModelRepository,
        catalog: Catalog,
        settings: Settings,
        store: StateStore,
    ) -> None:
        self.repo = repo
        self.models = models
        self.catalog = catalog
        self.settings = settings
        self.store = store

    async def admit_rows(self, principal: Principal, rows: int) -> None:
        """The ingest cost caps: rows per post, and rows per minute for a client key."""
        cap = self.settings.evaluations_max_rows_per_post
        if rows > cap:
            raise UnprocessableEntity(
                f"{rows} rows in one post; at most {cap} (split the log into several posts)",
                param="rows",
            )
        if principal.key_id is None:
            return
        per_min = self.settings.evaluations_rows_per_minute
        key = f"evrows:{principal.key_id}"
        n = await self.store.incr_window(key, rows, window_s=WINDOW_S)
        if n > per_min:
            await self.store.incr_window(key, -rows, window_s=WINDOW_S)
            raise RateLimited(
                f"evaluation ingest limit of {per_min} rows/min exceeded",
                headers={"Retry-After": str(WINDOW_S)},
            )

    async def ingest(
        self, batch: EvaluationBatch, *, principal: Principal, idempotency_key: str, digest: str
    ) -> tuple[dict[str, Any], bool]:
        """Store ``batch`` once per (caller, Idempotency-Key): (the acknowledgement, whether it
        replays an earlier post). ``digest`` is the body's SHA-256; another body under a used
        key is a 409."""
        owner = principal.scope
        shared = principal.trusted
        prev = await self.repo.stored_batch(owner=owner, idempotency_key=idempotency_key)
        if prev is not None:
            return await self._replay(prev, batch, digest=digest, shared=shared), True
        evals = [to_input(r) for r in batch.rows]
        X = await self.catalog.embed_inputs(evals)
        batch_id = await self.repo.add_batch(
            owner=owner,
            key_id=principal.key_id,
            idempotency_key=idempotency_key,
            request_sha256=digest,
            rows=[(r.model, e) for r, e in zip(batch.rows, evals, strict=True)],
            embeddings=X,
            pending_ack=lambda i: {
                **_ack(i, len(batch.rows), {}, [], shared=shared),
                _PENDING: True,
            },
        )
        if batch_id is None:
            # A concurrent post with this key committed first: answer with its batch.
            prev = await self.repo.stored_batch(owner=owner, idempotency_key=idempotency_key)
            if prev is None:
                raise RuntimeError("idempotency conflict without a stored batch")
            return await self._replay(prev, batch, digest=digest, shared=shared), True
        return await self._finish(batch_id, batch, shared=shared), False

    async def _replay(
        self, prev: EvaluationBatchRow, batch: EvaluationBatch, *, digest: str, shared: bool
    ) -> dict[str, Any]:
        if prev.request_sha256 != digest:
            raise Conflict(
                "Idempotency-Key already used with a different body", param="Idempotency-Key"
            )
        ack = dict(prev.response or {})
        if not ack or ack.pop(_PENDING, False):
            # Committed, but the gateway stopped before refreshing (or before storing the ack):
            # finish the job now, so the retry gets the real acknowledgement.
            ack = await self._finish(prev.id, batch, shared=shared)
        return ack

    async def _finish(
        self, batch_id: int, batch: EvaluationBatch, *, shared: bool
    ) -> dict[str, Any]:
        models = sorted({r.model for r in batch.rows})
        registered = await self.models.registered(models)
        refreshed = await self.catalog.refresh_embeddings(sorted(registered)) if shared else {}
        ack = _ack(
            batch_id,
            len(batch.rows),
            refreshed,
            [m for m in models if m not in registered],
            shared=shared,
        )
        await self.repo.save_ack(batch_id, ack)
        return ack

    async def page(
        self, principal: Principal, *, limit: int, after: int, model: str | None
    ) -> EvaluationsPublic:
        """The caller's own rows (the admin token sees every row), oldest first, by id cursor."""
        rows = await self.repo.page(key_id=principal.key_id, after=after, model=model, limit=limit)
        return EvaluationsPublic(data=[to_public(r) for r in rows])

    async def delete_batch(self, batch_id: int, principal: Principal) -> None:
        """Delete one of the caller's batches; its models are re-embedded without it."""
        models = await self.repo.delete_batch(batch_id, key_id=principal.key_id)
        if principal.trusted:  # an untrusted key's rows never were behind a shared embedding
            await self.catalog.refresh_embeddings(models)

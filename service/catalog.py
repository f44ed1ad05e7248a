"""The write side of the model registry: register, update, delete, re-embed, publish.

Every write commits the rows and the bumped registry version in one transaction, then publishes
the version (Redis mirror) and reloads this replica's pool at once; other replicas pick it up on
their next poll. A model is routable as soon as ``register`` returns.

Usage::

    catalog = Catalog(db=db, store=store, locus=locus, encode=encoder.encode, on_change=reload,
                      min_evaluations=16, max_embed_evaluations=4096)
    row = await catalog.register(ModelSpec(...), [EvalInput(score=1.0, query="2+2?"), ...])
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, delete, false, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engine import Database
from service.db.models import ApiKeyRow, EvaluationRow, ModelRow, from_blob, to_blob
from service.db.repositories import model_by_name
from service.errors import Conflict, UnprocessableEntity
from service.evaluations.rows import EvalInput, to_orm
from service.routing.registry import bump_version
from service.routing.scoring import ModelEmbedder, embedder_id
from service.state import StateStore
from training.minilm import EMBED_DIM

Array = npt.NDArray[np.float32]
VERSION_KEY = "registry_version"


def shared_rows() -> ColumnElement[bool]:
    """Evaluation rows that may shape the shared embeddings every tenant routes by: the
    operator's (``key_id`` NULL) and those of keys the operator marked trusted. An untrusted
    client's rows are stored (its own logs, federation) but never move another tenant's routing.
    """
    trusted = select(ApiKeyRow.id).where(ApiKeyRow.trusted.is_not(false()))
    return or_(EvaluationRow.key_id.is_(None), EvaluationRow.key_id.in_(trusted))


@dataclass
class ModelSpec:
    name: str
    backend_kind: str
    backend_url: str | None
    backend_model: str | None
    backend_api_key: str | None
    input_per_mtok: float
    output_per_mtok: float
    meta: dict[str, Any] = field(default_factory=dict)


class Catalog:
    def __init__(
        self,
        *,
        db: Database,
        store: StateStore,
        locus: ModelEmbedder,
        encode: Callable[[list[str]], Array],
        on_change: Callable[[], Awaitable[None]],
        min_evaluations: int,
        max_embed_evaluations: int,
    ) -> None:
        self.db = db
        self.store = store
        self.locus = locus
        self.encode = encode
        self.on_change = on_change
        self.min_evaluations = min_evaluations
        self.max_embed_evaluations = max_embed_evaluations
        self.embedder_id = embedder_id(locus)
        self._lock = asyncio.Lock()

    async def embed_inputs(self, evals: Sequence[EvalInput]) -> Array:
        """Query embeddings [n, D]: given ones as they are, texts through the encoder."""
        dim = EMBED_DIM
        X = np.zeros((len(evals), dim), dtype=np.float32)
        todo = [(i, e.query) for i, e in enumerate(evals) if e.embedding is None]
        for i, e in enumerate(evals):
            if e.embedding is not None:
                v = np.asarray(e.embedding, dtype=np.float32)
                if v.shape != (dim,):
                    raise UnprocessableEntity(
                        f"evaluations[{i}].embedding has {v.size} values, expected {dim}",
                        param=f"evaluations.{i}.embedding",
                    )
                X[i] = v
        if todo:
            texts = [str(t) for _, t in todo]
            vecs = await asyncio.to_thread(self.encode, texts)
            for (i, _), v in zip(todo, vecs, strict=True):
                X[i] = v
        return X

    async def _embed(self, X: Array, y: Array) -> Array:
        return np.asarray(await asyncio.to_thread(self.locus.embed, X, y), dtype=np.float32)

    async def publish(self, version: int) -> None:
        await self.store.set_int_max(VERSION_KEY, version)
        await self.on_change()

    def _row(
        self,
        spec: ModelSpec,
        embedding: Array,
        *,
        num_evaluations: int,
        mean_prompt_tokens: float,
        mean_completion_tokens: float,
        meta: dict[str, Any],
    ) -> ModelRow:
        """A new enabled model row, stamped with the weights that embedded it."""
        return ModelRow(
            name=spec.name,
            backend_kind=spec.backend_kind,
            backend_url=spec.backend_url,
            backend_model=spec.backend_model,
            backend_api_key=spec.backend_api_key,
            input_per_mtok=spec.input_per_mtok,
            output_per_mtok=spec.output_per_mtok,
            embedding=to_blob(embedding),
            num_evaluations=num_evaluations,
            mean_prompt_tokens=mean_prompt_tokens,
            mean_completion_tokens=mean_completion_tokens,
            enabled=True,
            meta={**spec.meta, **meta, "embedder": self.embedder_id},
        )

    async def register(self, spec: ModelSpec, evals: Sequence[EvalInput]) -> ModelRow:
        if len(evals) < self.min_evaluations:
            raise UnprocessableEntity(
                f"{len(evals)} evaluations given; at least {self.min_evaluations} are needed "
                "to embed a model",
                param="evaluations",
            )
        X = await self.embed_inputs(evals)
        y = np.asarray([e.score for e in evals], dtype=np.float32)
        use = slice(-self.max_embed_evaluations, None)
        z = await self._embed(X[use], y[use])
        ptoks = [e.prompt_tokens for e in evals if e.prompt_tokens is not None]
        ctoks = [e.completion_tokens for e in evals if e.completion_tokens is not None]
        row = self._row(
            spec,
            z,
            num_evaluations=len(evals),
            mean_prompt_tokens=float(np.mean(ptoks)) if ptoks else 0.0,
            mean_completion_tokens=float(np.mean(ctoks)) if ctoks else 0.0,
            meta={"mean_score": float(y.mean())},
        )
        async with self.db.session() as s:
            s.add(row)
            try:
                await s.flush()
            except IntegrityError:
                raise Conflict(f"model {spec.name!r} already exists", param="name") from None
            s.add_all(to_orm(e, X[i], model=spec.name) for i, e in enumerate(evals))
            version = await bump_version(s)
            await s.commit()
        await self.publish(version)
        return row

    async def register_embedded(
        self,
        spec: ModelSpec,
        *,
        embedding: Array,
        num_evaluations: int,
        mean_prompt_tokens: float,
        mean_completion_tokens: float,
        evidence: tuple[Array, Array] | None = None,
    ) -> bool:
        """Register a model with a ready LOCUS embedding (the shipped pool); False if present
        (unless it is a bundle model embedded by other weights: then it is refreshed from the
        bundle, see ``_refreshable``).

        ``evidence`` (query embeddings [n, D], scores [n]): the evaluations the embedding was
        made from, stored like a registration's so that the scorer (LOCUS-KR) can use them and a
        new LOCUS checkpoint can re-embed the model.
        """
        async with self.db.session() as s:
            old = (
                await s.execute(select(ModelRow).where(ModelRow.name == spec.name))
            ).scalar_one_or_none()
            if old is not None:
                if not self._refreshable(old, spec):
                    return False
                # A shipped model embedded by other weights (a new bundle): take the bundle's
                # new embedding and evaluations instead of leaving it stale (or disabled).
                await s.execute(
                    delete(EvaluationRow).where(
                        EvaluationRow.model_name == spec.name, EvaluationRow.key_id.is_(None)
                    )
                )
                meta = dict(old.meta or {})
                if meta.pop("stale_disabled", None):
                    old.enabled = True
                old.embedding = to_blob(embedding)
                old.num_evaluations = num_evaluations
                old.mean_prompt_tokens = mean_prompt_tokens
                old.mean_completion_tokens = mean_completion_tokens
                meta.update(
                    base_embedding=[float(v) for v in embedding],
                    base_evaluations=num_evaluations,
                    embedder=self.embedder_id,
                )
                if evidence is not None and len(evidence[1]):
                    meta["mean_score"] = float(np.mean(evidence[1]))
                old.meta = meta
            else:
                s.add(
                    self._row(
                        spec,
                        embedding,
                        num_evaluations=num_evaluations,
                        mean_prompt_tokens=mean_prompt_tokens,
                        mean_completion_tokens=mean_completion_tokens,
                        # Re-embedding blends this base with embeddings of evaluations added later.
                        meta={
                            "base_embedding": [float(v) for v in embedding],
                            "base_evaluations": num_evaluations,
                            **(
                                {"mean_score": float(np.mean(evidence[1]))}
                                if evidence is not None and len(evidence[1])
                                else {}
                            ),
                        },
                    )
                )
            if evidence is not None:
                s.add_all(
                    to_orm(EvalInput(score=float(y)), x, model=spec.name)
                    for x, y in zip(evidence[0], evidence[1], strict=True)
                )
            try:
                version = await bump_version(s)
                await s.commit()
            except IntegrityError:
                return False
        await self.publish(version)
        return True

    def _refreshable(self, row: ModelRow, spec: ModelSpec) -> bool:
        """A bundle model stored by other LOCUS weights, offered again by a bundle."""
        meta = row.meta or {}
        return (
            spec.meta.get("source") == "bundle"
            and meta.get("source") == "bundle"
            and meta.get("embedder") != self.embedder_id
        )

    async def get(self, s: AsyncSession, name: str) -> ModelRow:
        return await model_by_name(s, name)

    async def update(self, name: str, changes: dict[str, Any]) -> ModelRow:
        async with self.db.session() as s:
            row = await self.get(s, name)
            for k, v in changes.items():
                setattr(row, k, v)
            version = await bump_version(s)
            await s.commit()
        await self.publish(version)
        return row

    async def delete(self, name: str) -> None:
        async with self.db.session() as s:
            row = await self.get(s, name)
            await s.execute(
                delete(EvaluationRow).where(
                    EvaluationRow.model_name == name, EvaluationRow.key_id.is_(None)
                )
            )
            await s.delete(row)
            version = await bump_version(s)
            await s.commit()
        await self.publish(version)

    async def reembed_stale(self) -> dict[str, str]:
        """Re-embed models embedded by other weights (a new LOCUS checkpoint); disable those
        that cannot be re-embedded because no evaluations of them are stored."""
        async with self.db.session() as s:
            rows = (await s.execute(select(ModelRow))).scalars().all()
            stale = [r.name for r in rows if (r.meta or {}).get("embedder") != self.embedder_id]
            back = [
                r.name for r in rows if r.name not in stale and (r.meta or {}).get("stale_disabled")
            ]
            counts = dict(
                (
                    await s.execute(
                        select(EvaluationRow.model_name, func.count())
                        .where(EvaluationRow.model_name.in_(stale), shared_rows())
                        .group_by(EvaluationRow.model_name)
                    )
                ).all()
            )
        out: dict[str, str] = {}
        redo = [n for n in stale if counts.get(n)]
        if redo:
            await self.refresh_embeddings(redo, fresh=True)
            out.update(dict.fromkeys(redo, "re-embedded"))
        for name in stale:
            if name not in out:
                async with self.db.session() as s:
                    meta = dict((await self.get(s, name)).meta or {})
                await self.update(
                    name, {"enabled": False, "meta": {**meta, "stale_disabled": True}}
                )
                out[name] = "disabled: embedded by other weights, no stored evaluations"
        for name in back:  # the weights that embedded it are loaded again
            async with self.db.session() as s:
                meta = dict((await self.get(s, name)).meta or {})
            meta.pop("stale_disabled", None)
            await self.update(name, {"enabled": True, "meta": meta})
            out[name] = "enabled again: its embedding matches the loaded weights"
        return out

    async def refresh_embeddings(
        self, names: Sequence[str], *, fresh: bool = False
    ) -> dict[str, int]:
        """Re-embed registered models from their stored shared evaluations (one forward pass
        each); rows of untrusted keys are left out (``shared_rows``)."""
        done: dict[str, int] = {}
        async with self._lock, self.db.session() as s:
            rows = (
                (await s.execute(select(ModelRow).where(ModelRow.name.in_(list(names)))))
                .scalars()
                .all()
            )
            for row in rows:
                evs = (
                    await s.execute(
                        select(EvaluationRow.embedding, EvaluationRow.score)
                        .where(EvaluationRow.model_name == row.name, shared_rows())
                        .order_by(EvaluationRow.id.desc())
                        .limit(self.max_embed_evaluations)
                    )
                ).all()
                total = (
                    await s.execute(
                        select(func.count())
                        .select_from(EvaluationRow)
                        .where(EvaluationRow.model_name == row.name, shared_rows())
                    )
                ).scalar_one()
                if not evs:
                    continue
                X = np.stack([from_blob(e[0]) for e in evs])
                y = np.asarray([e[1] for e in evs], dtype=np.float32)
                z = await self._embed(X, y)
                meta = dict(row.meta or {})
                base_n = 0 if fresh else int(meta.get("base_evaluations", 0))
                if base_n and "base_embedding" in meta:
                    base = np.asarray(meta["base_embedding"], dtype=np.float32)
                    z = ((base_n * base + len(evs) * z) / (base_n + len(evs))).astype(np.float32)
                row.embedding = to_blob(z)
                row.meta = {**meta, "embedder": self.embedder_id}
                row.num_evaluations = base_n + int(total)
                done[row.name] = row.num_evaluations
            if done:
                version = await bump_version(s)
                await s.commit()
            else:
                version = None
        if version is not None:
            await self.publish(version)
        return done

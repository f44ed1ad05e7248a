"""The in-memory view of the model registry: an immutable snapshot, swapped whole on reload.

The database is the single source of truth. Every registry write bumps ``registry_state.version``
(and its mirror in Redis); each replica polls that version every ``registry_poll_s`` and reloads
when it changes, so a model registered on one replica is routable on all of them within a second.

Usage::

    pool = await load_pool(db)
    entry = pool.get("smollm2-135m")
    Z = pool.embeddings(["a", "b"])      # [2, d]
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engine import Database
from service.db.models import EvaluationRow, ModelRow, RegistryStateRow, from_blob

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Backend:
    kind: str  # "openai" (any OpenAI-compatible server, e.g. vLLM) or "replay"
    url: str | None = None
    model: str | None = None
    api_key: str | None = None
    dataset: str | None = None


@dataclass(frozen=True)
class PoolEntry:
    name: str
    backend: Backend
    input_per_mtok: float
    output_per_mtok: float
    embedding: Array
    num_evaluations: int
    mean_prompt_tokens: float
    mean_completion_tokens: float
    created: int
    meta: dict[str, Any] = field(default_factory=dict)
    # The model's own evaluations, for scorers that use them beside its embedding (LOCUS-KR):
    # query embeddings [n, D] (float16, to keep memory small) and scores [n]; None = none stored.
    evidence_X: npt.NDArray[np.float16] | None = field(default=None, repr=False)
    evidence_y: Array | None = field(default=None, repr=False)

    @property
    def evidence_mean(self) -> float | None:
        """Mean score of its evaluations (stored ones, else the mean recorded at registration)."""
        if self.evidence_y is not None and len(self.evidence_y):
            return float(self.evidence_y.mean())
        v = self.meta.get("mean_score")
        return None if v is None else float(v)

    def cost_usd(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


@dataclass(frozen=True)
class Pool:
    """The enabled models of one registry version."""

    version: int
    entries: tuple[PoolEntry, ...]
    _index: dict[str, int] = field(default_factory=dict)
    _Z: Array = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    @classmethod
    def build(cls, version: int, entries: list[PoolEntry]) -> Pool:
        entries = sorted(entries, key=lambda e: e.name)
        Z = (
            np.stack([e.embedding for e in entries]).astype(np.float32)
            if entries
            else np.zeros((0, 0), dtype=np.float32)
        )
        return cls(version, tuple(entries), {e.name: i for i, e in enumerate(entries)}, Z)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> PoolEntry | None:
        i = self._index.get(name)
        return None if i is None else self.entries[i]

    def index(self, name: str) -> int:
        return self._index[name]

    def embeddings(self, names: list[str] | None = None) -> Array:
        if names is None:
            return self._Z
        return self._Z[[self._index[n] for n in names]]


# Most recent registration evaluations kept in memory per model for the scorer (LOCUS-KR).
EVIDENCE_CAP = 1024
# (database, model name) -> (row stamp, X, y): evaluations are read again only when the row changed.
_EVIDENCE_CACHE: weakref.WeakKeyDictionary[
    Database, dict[str, tuple[tuple[Any, ...], npt.NDArray[np.float16], Array]]
] = weakref.WeakKeyDictionary()


async def _load_evidence(
    db: Database, s: AsyncSession, rows: list[ModelRow]
) -> dict[str, tuple[npt.NDArray[np.float16], Array]]:
    """Each model's newest EVIDENCE_CAP registration evaluations (key_id NULL), cached per row."""
    cache = _EVIDENCE_CACHE.setdefault(db, {})
    out: dict[str, tuple[npt.NDArray[np.float16], Array]] = {}
    for row in rows:
        stamp = (row.updated_at, row.num_evaluations, bytes(row.embedding))
        hit = cache.get(row.name)
        if hit is None or hit[0] != stamp:
            evs = (
                await s.execute(
                    select(EvaluationRow.embedding, EvaluationRow.score)
                    .where(EvaluationRow.model_name == row.name, EvaluationRow.key_id.is_(None))
                    .order_by(EvaluationRow.id.desc())
                    .limit(EVIDENCE_CAP)
                )
            ).all()
            X = (
                np.stack([from_blob(e[0]) for e in evs]).astype(np.float16)
                if evs
                else np.zeros((0, 0), dtype=np.float16)
            )
            y = np.asarray([e[1] for e in evs], dtype=np.float32)
            hit = cache[row.name] = (stamp, X, y)
        if len(hit[2]):
            out[row.name] = (hit[1], hit[2])
    return out


def entry_from_row(
    row: ModelRow, evidence: tuple[npt.NDArray[np.float16], Array] | None = None
) -> PoolEntry:
    meta = dict(row.meta or {})
    return PoolEntry(
        name=row.name,
        backend=Backend(
            kind=row.backend_kind,
            url=row.backend_url,
            model=row.backend_model,
            api_key=row.backend_api_key,
            dataset=meta.get("dataset"),
        ),
        input_per_mtok=row.input_per_mtok,
        output_per_mtok=row.output_per_mtok,
        embedding=from_blob(row.embedding),
        num_evaluations=row.num_evaluations,
        mean_prompt_tokens=row.mean_prompt_tokens,
        mean_completion_tokens=row.mean_completion_tokens,
        created=int(row.created_at.timestamp()),
        meta=meta,
        evidence_X=None if evidence is None else evidence[0],
        evidence_y=None if evidence is None else evidence[1],
    )


async def read_version(session: AsyncSession) -> int:
    v = (
        await session.execute(select(RegistryStateRow.version).where(RegistryStateRow.id == 1))
    ).scalar_one_or_none()
    return int(v or 0)


async def bump_version(session: AsyncSession) -> int:
    """Inside the caller's transaction: the new version is visible with its commit."""
    await session.execute(
        update(RegistryStateRow)
        .where(RegistryStateRow.id == 1)
        .values(version=RegistryStateRow.version + 1)
    )
    return await read_version(session)


async def load_pool(db: Database) -> Pool:
    async with db.session() as s:
        version = await read_version(s)
        rows = list((await s.execute(select(ModelRow).where(ModelRow.enabled.is_(True)))).scalars())
        evidence = await _load_evidence(db, s, rows)
        return Pool.build(version, [entry_from_row(r, evidence.get(r.name)) for r in rows])

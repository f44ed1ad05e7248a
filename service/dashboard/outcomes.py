"""Known outcomes: a model's real score on a query text, where an evaluation of it exists.

Two sources, looked up by the SHA-256 of the stripped query text (``service.request_log``):

- the derived data set of a data-set model (its ``backend.dataset``, e.g. ``mmlu_pro``): the
  recorded score of every model on every question (``training.data.load_matrix``);
- the gateway's stored evaluations (``evaluations`` table: registrations, ``/v1/evaluations``
  posts, the live models' onboarding measurements).

The data sets are loaded once per process (a few seconds, off the event loop); the stored
evaluations are re-read when their count or newest id changes. Realised quality on the
dashboard is this score for the model that served a request, never a prediction.

Usage::

    idx = await outcomes.index(c)
    idx.score("Yi-6B", text_sha256(prompt))   # 1.0, 0.0, or None when never evaluated
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select

from service.db.engine import Database
from service.db.models import EvaluationRow
from service.request_log import text_sha256 as _sha

log = logging.getLogger(__name__)


@dataclass
class DatasetOutcomes:
    """One data set's score matrix, indexed by query text digest."""

    matrix: Any  # training.data.EvalMatrix
    rows: dict[str, int]
    cols: dict[str, int]

    @classmethod
    def load(cls, dataset: str) -> DatasetOutcomes:
        from training.data import load_matrix

        m = load_matrix(dataset)
        return cls(
            m,
            {_sha(q): i for i, q in enumerate(m.queries) if q},
            {n: j for j, n in enumerate(m.models)},
        )

    def score(self, model: str, sha: str) -> float | None:
        j = self.cols.get(model)
        i = self.rows.get(sha)
        if i is None or j is None:
            return None
        v = float(self.matrix.scores[i, j])
        return None if np.isnan(v) else v


@dataclass
class OutcomeIndex:
    datasets: list[DatasetOutcomes] = field(default_factory=list)
    stored: dict[tuple[str, str], float] = field(default_factory=dict)

    def score(self, model: str, sha: str) -> float | None:
        v = self.stored.get((model, sha))
        if v is not None:
            return v
        for d in self.datasets:
            v = d.score(model, sha)
            if v is not None:
                return v
        return None


class Outcomes:
    """The process-wide cache behind :class:`OutcomeIndex`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._datasets: dict[str, DatasetOutcomes | None] = {}
        self._stored: dict[tuple[str, str], float] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = asyncio.Lock()

    async def dataset(self, name: str) -> DatasetOutcomes | None:
        if name not in self._datasets:
            try:
                self._datasets[name] = await asyncio.to_thread(DatasetOutcomes.load, name)
            except (FileNotFoundError, ValueError, KeyError) as exc:
                log.warning("no outcomes for data set %s: %s", name, exc)
                self._datasets[name] = None
        return self._datasets[name]

    async def index(self, datasets: list[str]) -> OutcomeIndex:
        async with self._lock:
            loaded = [d for d in [await self.dataset(n) for n in sorted(set(datasets))] if d]
            async with self.db.session() as s:
                n, top = (
                    await s.execute(
                        select(func.count(EvaluationRow.id), func.max(EvaluationRow.id)).where(
                            EvaluationRow.query.is_not(None)
                        )
                    )
                ).one()
                stamp = (int(n or 0), int(top or 0))
                if stamp != self._stamp:
                    rows = (
                        await s.execute(
                            select(
                                EvaluationRow.model_name, EvaluationRow.query, EvaluationRow.score
                            )
                            .where(EvaluationRow.query.is_not(None))
                            .order_by(EvaluationRow.id)
                        )
                    ).all()
                    # The newest evaluation of a (model, text) wins.
                    self._stored = {(m, _sha(q or "")): float(v) for m, q, v in rows}
                    self._stamp = stamp
            return OutcomeIndex(loaded, self._stored)

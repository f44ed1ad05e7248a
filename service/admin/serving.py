"""Admin computations that are more than a query: the model portfolio."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from service.admin.protocol import PortfolioPublic, PortfolioRequest
from service.db.models import EvaluationRow, from_blob
from service.errors import ModelNotFound, UnprocessableEntity
from training.selection import distances_to, k_center

if TYPE_CHECKING:
    from service.db.engine import Database
    from service.routing.registry import Pool
    from service.routing.scoring import ModelEmbedder

PROBE_QUERIES = 512


async def portfolio(
    body: PortfolioRequest, *, pool: Pool, locus: ModelEmbedder, db: Database
) -> PortfolioPublic:
    """Greedy k-center in LOCUS space (``training.selection.k_center``), seeded with the model of
    best mean predicted p_correct.

    The probe queries are the most recent stored evaluation queries; ``coverage`` is the mean
    over them of the best predicted p_correct within the portfolio.
    """
    names = body.candidates or pool.names
    missing = [n for n in names if pool.get(n) is None]
    if missing:
        raise ModelNotFound(f"unknown model(s): {', '.join(missing)}", param="candidates")
    if body.max_cost_per_mtok is not None:
        names = [n for n in names if pool.get(n).output_per_mtok <= body.max_cost_per_mtok]  # type: ignore[union-attr]
    if len(names) < body.k:
        raise UnprocessableEntity(f"only {len(names)} candidate models for k={body.k}", param="k")
    async with db.session() as s:
        blobs = (
            (
                await s.execute(
                    select(EvaluationRow.embedding)
                    .order_by(EvaluationRow.id.desc())
                    .limit(PROBE_QUERIES)
                )
            )
            .scalars()
            .all()
        )
    Z = pool.embeddings(names)
    if blobs:
        X = np.stack([from_blob(b) for b in blobs])
        P = np.asarray(locus.predict(Z, X), dtype=np.float32)  # [Q, M]
    else:
        P = np.ones((1, len(names)), dtype=np.float32)
    chosen = k_center(Z, body.k, start=int(np.argmax(P.mean(axis=0))))
    return PortfolioPublic(
        models=[names[i] for i in chosen],
        coverage=float(P[:, chosen].max(axis=1).mean()),
        radius=float(np.min([distances_to(Z, Z[i]) for i in chosen], axis=0).max()),
    )

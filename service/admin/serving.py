"""Admin computations that are more than a query: the model portfolio."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from service.admin.protocol import PortfolioPublic, PortfolioRequest
from service.db.models import EvaluationRow, from_blob
from service.errors import ModelNotFound, UnprocessableEntity

if TYPE_CHECKING:
    from service.app import Components

PROBE_QUERIES = 512


async def portfolio(c: Components, body: PortfolioRequest) -> PortfolioPublic:
    """Greedy k-center in LOCUS space, seeded with the model of best mean predicted p_correct.

    The probe queries are the most recent stored evaluation queries; ``coverage`` is the mean
    over them of the best predicted p_correct within the portfolio.
    """
    pool = c.engine.pool
    names = body.candidates or pool.names
    missing = [n for n in names if pool.get(n) is None]
    if missing:
        raise ModelNotFound(f"unknown model(s): {', '.join(missing)}", param="candidates")
    if body.max_cost_per_mtok is not None:
        names = [n for n in names if pool.get(n).output_per_mtok <= body.max_cost_per_mtok]  # type: ignore[union-attr]
    if len(names) < body.k:
        raise UnprocessableEntity(f"only {len(names)} candidate models for k={body.k}", param="k")
    async with c.db.session() as s:
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
        P = np.asarray(c.locus.predict(Z, X), dtype=np.float32)  # [Q, M]
    else:
        P = np.ones((1, len(names)), dtype=np.float32)
    chosen = [int(np.argmax(P.mean(axis=0)))]
    d = np.linalg.norm(Z - Z[chosen[0]][None], axis=1)
    while len(chosen) < body.k:
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        d = np.minimum(d, np.linalg.norm(Z - Z[nxt][None], axis=1))
    return PortfolioPublic(
        models=[names[i] for i in chosen],
        coverage=float(P[:, chosen].max(axis=1).mean()),
        radius=float(d.max()),
    )

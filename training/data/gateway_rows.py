"""The gateway's evaluation rows as other components read them: one codec, one mapping.

The gateway stores every posted evaluation in its ``evaluations`` table (``service.db.models``,
changed only by Alembic migrations); a federated client's SuperNode reads its own rows straight
from that database (``federation.gateway_db``). Both sides use this module, so the blob format
and the row -> ``EvalRow`` mapping exist once:

- ``to_blob`` / ``from_blob``: a query embedding as little-endian float32 bytes;
- ``EVALUATION_COLUMNS``: the columns read, in ``row_to_eval`` order;
- ``row_to_eval``: one stored row as the evaluation-log schema's ``EvalRow``.

It lives at the bottom layer (training) because both the gateway and federation need it.

Usage::

    blob = to_blob(x)                  # bytes, 4 per value
    row = row_to_eval(values, i, client="acme")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from training.data.schema import EvalRow

EVALUATIONS_TABLE = "evaluations"
EVALUATION_COLUMNS = (
    "query_id",
    "query",
    "embedding",
    "model_name",
    "score",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "category",
)


def to_blob(v: npt.ArrayLike) -> bytes:
    """A vector as stored in the gateway's database: little-endian float32."""
    return np.asarray(v, dtype="<f4").tobytes()


def from_blob(b: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(b, dtype="<f4").astype(np.float32)


def row_to_eval(values: Sequence[Any], index: int, *, client: str | None = None) -> EvalRow:
    """A stored row (``EVALUATION_COLUMNS`` order) as an ``EvalRow``; a row without a
    ``query_id`` gets ``row-<index>``."""
    qid, query, emb, model, score, pt, ct, cost, cat = values
    return EvalRow(
        query_id=str(qid) if qid is not None else f"row-{index}",
        model=str(model),
        score=float(score),
        prompt_tokens=int(pt or 0),
        completion_tokens=int(ct or 0),
        query=query,
        embedding=tuple(from_blob(emb).astype(float).tolist()),
        cost_usd=float(cost) if cost is not None else None,
        category=cat,
        client_id=client,
    )

"""The gateway's evaluation rows in each shape they take, mapped in this one module.

An evaluation enters as a wire row (``POST /v1/evaluations``' ``EvaluationLogRow``,
``POST /admin/models``' ``EvaluationIn``) or a committed JSONL line (a live model's measured
evaluations), becomes an :class:`EvalInput` (what the catalog embeds), is stored as an
``EvaluationRow`` (ORM) and leaves as an ``EvaluationPublic`` (``GET /v1/evaluations``). The
federation reads the same stored rows as ``training``'s ``EvalRow`` through
``training.data.gateway_rows`` (the stored columns and the embedding blob codec, used here too),
so a field added to the table is mapped here and there, nowhere else.

Usage::

    evals = [to_input(r) for r in batch.rows]
    X = await catalog.embed_inputs(evals)
    rows = [to_orm(e, X[i], model=r.model, key_id=key_id) for i, (e, r) in ...]
    public = [to_public(row) for row in rows]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from service.db.models import EvaluationRow
from service.evaluations.protocol import EvaluationPublic
from training.data.gateway_rows import to_blob


@dataclass(frozen=True)
class EvalInput:
    """One evaluation before it is stored: a score and its query (text, or a ready embedding)."""

    score: float
    query: str | None = None
    embedding: Sequence[float] | None = None
    query_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    category: str | None = None


def to_input(src: Mapping[str, Any] | object) -> EvalInput:
    """A wire row (attributes) or a JSONL line (a mapping) as an ``EvalInput``; a field the
    source does not have (``EvaluationIn`` has no ``cost_usd``) is None."""
    fields: Mapping[str, Any] = src if isinstance(src, Mapping) else vars(src)
    get = fields.get
    return EvalInput(
        score=float(fields["score"]),
        query=get("query"),
        embedding=get("embedding"),
        query_id=get("query_id"),
        prompt_tokens=get("prompt_tokens"),
        completion_tokens=get("completion_tokens"),
        cost_usd=get("cost_usd"),
        category=get("category"),
    )


def to_orm(
    e: EvalInput,
    embedding: npt.ArrayLike,
    *,
    model: str,
    key_id: int | None = None,
    batch_id: int | None = None,
) -> EvaluationRow:
    """The stored row of one evaluation of ``model``, with its query embedding [D] (computed by
    the catalog when ``e`` carried only text); ``key_id`` None is the operator's."""
    return EvaluationRow(
        model_name=model,
        key_id=key_id,
        batch_id=batch_id,
        query_id=e.query_id,
        query=e.query,
        embedding=to_blob(embedding),
        score=float(e.score),
        prompt_tokens=e.prompt_tokens,
        completion_tokens=e.completion_tokens,
        cost_usd=e.cost_usd,
        category=e.category,
    )


def to_public(row: EvaluationRow) -> EvaluationPublic:
    """A stored row as ``GET /v1/evaluations`` returns it (no embedding, no key)."""
    return EvaluationPublic(
        id=row.id,
        batch_id=row.batch_id,
        query_id=row.query_id,
        query=row.query,
        model=row.model_name,
        score=row.score,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_usd=row.cost_usd,
        category=row.category,
    )

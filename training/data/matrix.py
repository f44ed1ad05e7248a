"""The dense evaluation matrix that LOCUS, the routers and the evaluation harness consume.

An evaluation log (one row per (query, model) evaluation, see ``schema.py``) is pivoted into an
:class:`EvalMatrix`: one row per query, one column per model, ``NaN`` where a model was not
evaluated on a query. Query embeddings sit beside it, one per query.

Usage::

    m = load_matrix("mmlu_pro")            # the committed derived data
    train = m.subset(m.split == "train")
    X, Y = train.embeddings, train.scores  # [Q, D] float32, [Q, M] float32 with NaN
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
StrArray = npt.NDArray[np.str_]


@dataclass(frozen=True)
class EvalMatrix:
    """Queries x models: scores, costs and token counts, plus one embedding per query."""

    dataset: str
    query_ids: StrArray  # [Q]
    queries: list[str]  # [Q] text (may be empty strings when only embeddings were logged)
    categories: StrArray  # [Q]
    split: StrArray  # [Q] one of "train", "val", "test"
    embeddings: FloatArray  # [Q, D] L2-normalised query embeddings
    models: list[str]  # [M]
    scores: FloatArray  # [Q, M] in [0, 1]; NaN = not evaluated
    cost_usd: FloatArray  # [Q, M]; NaN = not evaluated
    prompt_tokens: FloatArray  # [Q, M]; NaN = not evaluated
    completion_tokens: FloatArray  # [Q, M]; NaN = not evaluated
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        q, m = len(self.query_ids), len(self.models)
        for name in ("scores", "cost_usd", "prompt_tokens", "completion_tokens"):
            shape = getattr(self, name).shape
            if shape != (q, m):
                raise ValueError(f"EvalMatrix.{name} has shape {shape}, expected {(q, m)}")
        if self.embeddings.shape[0] != q:
            raise ValueError(
                f"EvalMatrix.embeddings has {self.embeddings.shape[0]} rows, expected {q}"
            )
        for name in ("queries", "categories", "split"):
            if len(getattr(self, name)) != q:
                raise ValueError(
                    f"EvalMatrix.{name} has {len(getattr(self, name))} entries, expected {q}"
                )

    @property
    def num_queries(self) -> int:
        return len(self.query_ids)

    @property
    def observed(self) -> npt.NDArray[np.bool_]:
        """[Q, M] mask of evaluated cells."""
        return ~np.isnan(self.scores)

    def subset(self, rows: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> EvalMatrix:
        """Rows (queries) selected by a boolean mask or an index array."""
        idx = np.flatnonzero(rows) if rows.dtype == np.bool_ else np.asarray(rows)
        return replace(
            self,
            query_ids=self.query_ids[idx],
            queries=[self.queries[i] for i in idx],
            categories=self.categories[idx],
            split=self.split[idx],
            embeddings=self.embeddings[idx],
            scores=self.scores[idx],
            cost_usd=self.cost_usd[idx],
            prompt_tokens=self.prompt_tokens[idx],
            completion_tokens=self.completion_tokens[idx],
        )

    def select_models(self, names: list[str]) -> EvalMatrix:
        """Columns (models) by name, in the given order."""
        missing = [n for n in names if n not in self.models]
        if missing:
            raise KeyError(f"models not in {self.dataset}: {missing}")
        cols = [self.models.index(n) for n in names]
        return replace(
            self,
            models=list(names),
            scores=self.scores[:, cols],
            cost_usd=self.cost_usd[:, cols],
            prompt_tokens=self.prompt_tokens[:, cols],
            completion_tokens=self.completion_tokens[:, cols],
        )

    def meta_models(self, key: str, default: list[str] | None = None) -> list[str]:
        """A list of model names from ``meta`` (e.g. "seen_models"), or ``default``."""
        value = self.meta.get(key)
        if value is None:
            return list(default if default is not None else [])
        if not isinstance(value, list):
            raise TypeError(f"meta[{key!r}] is not a list of model names")
        return [str(v) for v in value]

    def for_split(self, name: str) -> EvalMatrix:
        return self.subset(self.split == name)

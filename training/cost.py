"""Per-(query, model) cost estimates for routers that predict correctness only (LOCUS).

Each model's cost is modelled as ``a_m + b_m * prompt_tokens``: ``b_m`` is the input price per
token and ``a_m`` the expected output cost. With a price table, ``b_m = input_per_mtok / 1e6`` and
``a_m = mean_completion_tokens * output_per_mtok / 1e6``; from a log with recorded USD costs and no
prices (RouterBench), both are fitted by least squares on the model's training evaluations
(clipped at zero).

Usage::

    cm = CostModel.fit(train_matrix)
    cost = cm.predict(prompt_tokens)          # [B, M] USD
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.data.matrix import EvalMatrix

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class CostModel:
    models: list[str]
    intercept: Array  # [M] USD per query
    per_prompt_token: Array  # [M] USD per prompt token

    @classmethod
    def fit(cls, matrix: EvalMatrix) -> CostModel:
        a = np.zeros(len(matrix.models), dtype=np.float32)
        b = np.zeros(len(matrix.models), dtype=np.float32)
        for j in range(len(matrix.models)):
            obs = ~np.isnan(matrix.cost_usd[:, j])
            if not obs.any():
                raise ValueError(f"model {matrix.models[j]!r} has no evaluations with a cost")
            pt = matrix.prompt_tokens[obs, j].astype(np.float64)
            c = matrix.cost_usd[obs, j].astype(np.float64)
            if obs.sum() >= 2 and pt.std() > 0:
                slope, icpt = np.polyfit(pt, c, 1)
                slope = max(float(slope), 0.0)
                icpt = max(float(c.mean() - slope * pt.mean()), 0.0)
            else:
                slope, icpt = 0.0, float(c.mean())
            a[j], b[j] = icpt, slope
        return cls(list(matrix.models), a, b)

    @classmethod
    def from_prices(
        cls,
        models: list[str],
        input_per_mtok: npt.ArrayLike,
        output_per_mtok: npt.ArrayLike,
        mean_completion_tokens: npt.ArrayLike,
    ) -> CostModel:
        inp = np.asarray(input_per_mtok, dtype=np.float32)
        out = np.asarray(output_per_mtok, dtype=np.float32)
        ct = np.asarray(mean_completion_tokens, dtype=np.float32)
        return cls(
            list(models), (ct * out / 1e6).astype(np.float32), (inp / 1e6).astype(np.float32)
        )

    def predict(self, prompt_tokens: npt.ArrayLike) -> Array:
        """Expected USD cost [B, M] of sending each of B queries to each model."""
        pt = np.asarray(prompt_tokens, dtype=np.float32).reshape(-1, 1)
        return (self.intercept[None, :] + pt * self.per_prompt_token[None, :]).astype(np.float32)


def query_prompt_tokens(matrix: EvalMatrix) -> Array:
    """[Q] prompt length of each query (the same for every model that saw it; NaN-safe)."""
    pt = matrix.prompt_tokens
    counts = (~np.isnan(pt)).sum(1)
    total = np.nansum(pt, axis=1)
    return np.where(counts > 0, total / np.maximum(counts, 1), 0.0).astype(np.float32)

"""Baseline routers for every evaluation: kNN, per-model constant, best single, random, oracle.

All implement the ``Router`` protocol; costs are each model's mean training cost unless the
baseline sees the truth (oracle).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from training.data.matrix import EvalMatrix
from training.routers.base import RouterOutput

Array = npt.NDArray[np.float32]


def _mean_cost(matrix: EvalMatrix) -> Array:
    return np.nanmean(matrix.cost_usd, axis=0).astype(np.float32)


class ConstantRouter:
    """Each model's mean training score, whatever the query."""

    name = "constant"

    def __init__(self, matrix: EvalMatrix) -> None:
        self.models = list(matrix.models)
        self.acc = np.nanmean(matrix.scores, axis=0).astype(np.float32)
        self.cost = _mean_cost(matrix)

    def predict(self, X: Array) -> RouterOutput:
        b = len(X)
        return RouterOutput(np.tile(self.acc, (b, 1)), np.tile(self.cost, (b, 1)))


class BestSingleRouter(ConstantRouter):
    """Always the model with the best training accuracy (p = 1 for it, 0 for the others)."""

    name = "best_single"

    def __init__(self, matrix: EvalMatrix) -> None:
        super().__init__(matrix)
        self.best = int(np.argmax(self.acc))
        self.acc = np.zeros_like(self.acc)
        self.acc[self.best] = 1.0


class RandomRouter(ConstantRouter):
    """Uniformly random scores (seeded): the floor every router must clear."""

    name = "random"

    def __init__(self, matrix: EvalMatrix, seed: int = 0) -> None:
        super().__init__(matrix)
        self.rng = np.random.default_rng(seed)

    def predict(self, X: Array) -> RouterOutput:
        p = self.rng.random((len(X), len(self.models))).astype(np.float32)
        return RouterOutput(p, np.tile(self.cost, (len(X), 1)))


class KNNRouter:
    """Mean observed score and cost of the k most similar training queries (cosine), per model."""

    name = "knn"

    def __init__(self, matrix: EvalMatrix, k: int = 50) -> None:
        self.models = list(matrix.models)
        self.k = k
        self.X = matrix.embeddings / np.linalg.norm(matrix.embeddings, axis=1, keepdims=True)
        self.obs = (~np.isnan(matrix.scores)).astype(np.float32)
        self.scores = np.nan_to_num(matrix.scores).astype(np.float32)
        self.costs = np.nan_to_num(matrix.cost_usd).astype(np.float32)
        self.prior_acc = np.nanmean(matrix.scores, axis=0).astype(np.float32)
        self.prior_cost = _mean_cost(matrix)

    def predict(self, X: Array) -> RouterOutput:
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        p = np.empty((len(X), len(self.models)), dtype=np.float32)
        c = np.empty_like(p)
        for s in range(0, len(X), 1024):
            sim = Xn[s : s + 1024] @ self.X.T
            nn_idx = np.argpartition(-sim, self.k - 1, axis=1)[:, : self.k]  # [b, k]
            n = self.obs[nn_idx].sum(1)  # [b, M]
            with np.errstate(invalid="ignore", divide="ignore"):
                pa = (self.scores[nn_idx] * self.obs[nn_idx]).sum(1) / n
                pc = (self.costs[nn_idx] * self.obs[nn_idx]).sum(1) / n
            p[s : s + 1024] = np.where(n > 0, pa, self.prior_acc)
            c[s : s + 1024] = np.where(n > 0, pc, self.prior_cost)
        return RouterOutput(p, c)


class OracleRouter:
    """Knows the true test scores and costs: the cheapest correct model, else the cheapest.

    For evaluation only: ``predict`` takes the row indices of the matrix it was built on.
    """

    name = "oracle"

    def __init__(self, truth: EvalMatrix) -> None:
        self.models = list(truth.models)
        self.p = np.nan_to_num(truth.scores).astype(np.float32)
        self.cost = np.nan_to_num(truth.cost_usd, nan=np.inf).astype(np.float32)

    def choice(self) -> npt.NDArray[np.int64]:
        # correct models first, then by cost
        key = np.where(self.p > 0.5, self.cost, self.cost + 1e9)
        return np.argmin(key, axis=1).astype(np.int64)

    def predict(self, X: Array) -> RouterOutput:
        if len(X) != len(self.p):
            raise ValueError("the oracle only scores the exact questions it was built on")
        return RouterOutput(
            self.p, np.where(np.isinf(self.cost), 1e9, self.cost).astype(np.float32)
        )

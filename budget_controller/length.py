"""Predicted difficulty of a sub-question from its text embedding alone.

A ridge regression (closed form) from the query embedding to two targets over the solver pool:
the mean log completion length and the mean score. The difficulty baseline splits a budget by
the predicted length; the policy gets both predictions as input features. Fitted on training
questions only; it travels inside the policy checkpoint so the gateway uses the same numbers.

Usage::

    pred = LengthPredictor.fit(X_train, lengths_train, correct_train)
    log_len, p_correct = pred.predict(X)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LengthPredictor:
    weights: FloatArray  # [D + 1, 2]: bias row last; columns (mean log length, mean score)
    log_len_mean: float  # training mean of the log-length target (for feature scaling)
    log_len_std: float

    @classmethod
    def fit(
        cls, X: FloatArray, lengths: FloatArray, correct: FloatArray, *, alpha: float = 1.0
    ) -> LengthPredictor:
        """``X`` [Q, D]; ``lengths`` and ``correct`` [Q, S] over the solver pool."""
        y = np.stack([np.log(lengths).mean(axis=1), correct.mean(axis=1)], axis=1)  # [Q, 2]
        A = np.concatenate([X, np.ones((len(X), 1), dtype=X.dtype)], axis=1).astype(np.float64)
        reg = alpha * np.eye(A.shape[1])
        reg[-1, -1] = 0.0  # no shrinkage on the bias
        W = np.linalg.solve(A.T @ A + reg, A.T @ y.astype(np.float64))
        return cls(
            weights=W.astype(np.float32),
            log_len_mean=float(y[:, 0].mean()),
            log_len_std=float(y[:, 0].std() + 1e-6),
        )

    def predict(self, X: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(predicted mean log length, predicted mean score), each [Q]."""
        out = X @ self.weights[:-1] + self.weights[-1]
        return out[:, 0].astype(np.float32), np.clip(out[:, 1], 0.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights.tolist(),
            "log_len_mean": self.log_len_mean,
            "log_len_std": self.log_len_std,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LengthPredictor:
        return cls(
            weights=np.asarray(d["weights"], dtype=np.float32),
            log_len_mean=float(d["log_len_mean"]),
            log_len_std=float(d["log_len_std"]),
        )

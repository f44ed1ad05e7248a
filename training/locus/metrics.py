"""Correctness-prediction and routing metrics over a [Q, M] score matrix (NaN = not evaluated).

Usage::

    correctness_accuracy(p, scores)   # threshold p at 0.5, over observed cells
    routing_accuracy(p, scores)       # argmax_m p per query; fraction whose pick was correct
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


def correctness_accuracy(p: FloatArray, scores: FloatArray) -> float:
    """Accuracy of ``p >= 0.5`` against ``scores >= 0.5`` over observed (non-NaN) cells."""
    seen = ~np.isnan(scores)
    return float(np.mean((p[seen] >= 0.5) == (scores[seen] >= 0.5)))


def bce(p: FloatArray, scores: FloatArray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy over observed cells."""
    seen = ~np.isnan(scores)
    q, y = np.clip(p[seen], eps, 1 - eps), scores[seen]
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def routing_accuracy(p: FloatArray, scores: FloatArray) -> float:
    """Route each query to its highest-p model among those evaluated on it; mean score."""
    seen = ~np.isnan(scores)
    rows = seen.any(axis=1)
    masked = np.where(seen, p, -np.inf)[rows]
    pick = masked.argmax(axis=1)
    return float(np.mean(scores[rows][np.arange(len(pick)), pick]))


def best_single_accuracy(scores: FloatArray) -> float:
    """Accuracy of the single model with the best mean score (over its observed cells)."""
    return float(np.nanmax(np.nanmean(scores, axis=0)))


def oracle_accuracy(scores: FloatArray) -> float:
    """Fraction of queries that at least one model answered correctly."""
    rows = (~np.isnan(scores)).any(axis=1)
    return float(np.mean(np.nanmax(scores[rows], axis=1) >= 0.5))

"""Model similarity, nearest-neighbour fallback, and portfolio selection on model embeddings.

Usage::

    D = distances(Z)                              # [M, M] euclidean
    d = distances_to(Z, Z[0])                     # [M] euclidean, from one embedding
    order = neighbours(Z, i)                      # fallback order for model i, nearest first
    pick = k_center(Z, k=5)                       # indices of a covering portfolio
    pick = greedy_coverage(Z, budget=150.0, weights=params_b)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]


def distances(Z: Array, metric: str = "euclidean") -> npt.NDArray[np.float64]:
    Z = np.asarray(Z, dtype=np.float64)
    if metric == "euclidean":
        sq = (Z**2).sum(1)
        return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0.0))
    if metric == "cosine":
        U = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        return 1.0 - U @ U.T
    raise ValueError(f"unknown metric {metric!r} (euclidean or cosine)")


def distances_to(Z: Array, z: Array) -> npt.NDArray[np.float64]:
    """Euclidean distance [M] of every row of Z from z, computed directly (identical rows are at
    exactly 0, so ties stay ties)."""
    Z = np.asarray(Z, dtype=np.float64)
    return np.asarray(np.linalg.norm(Z - np.asarray(z, dtype=np.float64)[None, :], axis=1))


def neighbours(Z: Array, i: int, k: int | None = None) -> list[int]:
    """Other models by increasing distance from model i (ties by index).

    The gateway's fallback order and ``GET /admin/models/{name}/neighbors`` are this function."""
    d = distances_to(Z, Z[i])
    order = [j for j in np.lexsort((np.arange(len(d)), d)).tolist() if j != i]
    return order if k is None else order[:k]


def k_center(Z: Array, k: int, *, start: int | None = None) -> list[int]:
    """Greedy k-center (farthest-point) portfolio.

    Starts at ``start`` or, by default, at the medoid (the model with the smallest total distance
    to the others), then repeatedly adds the model farthest from the portfolio. The gateway's
    ``POST /admin/portfolio`` is this function, started at the best predicted model.
    """
    n = len(Z)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    first = int(np.argmin(distances(Z).sum(1))) if start is None else start
    pick = [first]
    nearest = distances_to(Z, Z[first])
    while len(pick) < k:
        nxt = int(np.argmax(nearest))
        pick.append(nxt)
        nearest = np.minimum(nearest, distances_to(Z, Z[nxt]))
    return pick


def greedy_coverage(Z: Array, budget: float, weights: npt.ArrayLike) -> list[int]:
    """Pick models under a budget (parameters or price) to cover the embedding space.

    Coverage of a portfolio S is ``-sum_m min_{s in S} d(m, s)`` over all models; each step adds the
    affordable model with the largest coverage gain per unit of its weight (weights <= 0 count as
    free-riders only after every priced model: they are skipped, since their cost is unknown).
    """
    D = distances(Z)
    w = np.asarray(weights, dtype=np.float64)
    n = len(D)
    pick: list[int] = []
    spent = 0.0
    nearest = np.full(n, D.max() * 2 + 1.0)
    while True:
        best, best_gain = -1, 0.0
        for j in range(n):
            if j in pick or w[j] <= 0 or spent + w[j] > budget:
                continue
            gain = (nearest - np.minimum(nearest, D[j])).sum() / w[j]
            if gain > best_gain:
                best, best_gain = j, gain
        if best < 0:
            return pick
        pick.append(best)
        spent += w[best]
        nearest = np.minimum(nearest, D[best])

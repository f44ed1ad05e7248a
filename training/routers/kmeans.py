"""K-means router: cluster centres with per-(cluster, model) accuracy and cost tables.

A query goes to its nearest centre; its predicted accuracy and cost for a model are that cell's
means. A cell with few observations is shrunk towards the model's global mean
(``(sum + prior * global_mean) / (count + prior)``; ``prior = 0`` gives the paper's plain means);
an empty cell takes the global mean (the paper's code falls back to accuracy 0 and cost 1e6, which
never routes there; the global mean keeps a model with sparse logs routable).

The pieces of the two-pass federated version (Askin et al., arXiv 2601.22318) are separate
functions: clients run ``local_centroids``, the server ``global_centres`` (weighted K-means on the
pooled centres), clients ``cell_stats`` against the global centres, and the server
``KMeansRouter.from_stats`` on the sums.

Usage::

    router = train_kmeans_router(matrix, KMeansConfig(k=30))
    out = router.predict(X)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans

from training.checkpoint import save_checkpoint
from training.data.matrix import EvalMatrix
from training.routers.base import RouterOutput

Array = npt.NDArray[np.float32]
R = TypeVar("R")
# Shrinkage priors a caller may choose from on validation (``choose_prior``): from nearly the
# plain cell means to nearly each model's global mean.
PRIORS = (0.5, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 300.0)


@dataclass
class KMeansConfig:
    k: int = field(default=30, metadata={"help": "clusters (paper: 30 centralised, 20 global)"})
    n_init: int = field(default=3, metadata={"help": "K-means restarts"})
    max_iter: int = field(default=30, metadata={"help": "Lloyd iterations"})
    prior: float = field(default=2.0, metadata={"help": "shrinkage towards the model mean"})
    seed: int = field(default=0, metadata={"help": "K-means seed"})


def local_centroids(
    X: Array, k: int, *, n_init: int = 3, max_iter: int = 30, seed: int = 0
) -> tuple[Array, Array]:
    """Pass 1 on a client: (centres [k', D], counts [k']) with k' = min(k, rows)."""
    k = min(k, len(X))
    km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(X)
    counts = np.bincount(km.labels_, minlength=k).astype(np.float32)
    return km.cluster_centers_.astype(np.float32), counts


def global_centres(
    centres: Array, counts: Array, k: int, *, n_init: int = 3, seed: int = 0
) -> Array:
    """Pass 1 on the server: weighted K-means over the pooled client centres."""
    k = min(k, len(centres))
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    km.fit(centres, sample_weight=counts)
    return km.cluster_centers_.astype(np.float32)


def assign(X: Array, centres: Array) -> npt.NDArray[np.int64]:
    d = (X**2).sum(1, keepdims=True) - 2 * X @ centres.T + (centres**2).sum(1)[None, :]
    return np.argmin(d, axis=1).astype(np.int64)


def cell_stats(
    X: Array,
    model_idx: npt.NDArray[np.int64],
    acc: Array,
    cost: Array,
    centres: Array,
    num_models: int,
) -> tuple[Array, Array, Array]:
    """Pass 2 on a client: per-(cluster, model) sums of accuracy and cost, and counts [K, M]."""
    k = len(centres)
    cl = assign(X, centres)
    flat = cl * num_models + model_idx
    size = k * num_models
    sum_acc = np.bincount(flat, weights=acc, minlength=size).reshape(k, num_models)
    sum_cost = np.bincount(flat, weights=cost, minlength=size).reshape(k, num_models)
    counts = np.bincount(flat, minlength=size).reshape(k, num_models)
    return sum_acc.astype(np.float32), sum_cost.astype(np.float32), counts.astype(np.float32)


class KMeansRouter:
    """Nearest-centre lookup tables. Usage: ``KMeansRouter.from_stats(...)`` or ``train_kmeans_router``."""

    name = "kmeans"

    def __init__(
        self,
        cfg: KMeansConfig,
        models: list[str],
        centres: Array,
        acc: Array,
        cost: Array,
        counts: Array,
    ) -> None:
        self.cfg = cfg
        self.models = list(models)
        self.centres = centres.astype(np.float32)
        self.acc = acc.astype(np.float32)  # [K, M]
        self.cost = cost.astype(np.float32)  # [K, M]
        self.counts = counts.astype(np.float32)  # [K, M]
        self.metrics: dict[str, float] = {}

    @classmethod
    def from_stats(
        cls,
        cfg: KMeansConfig,
        models: list[str],
        centres: Array,
        sum_acc: Array,
        sum_cost: Array,
        counts: Array,
    ) -> KMeansRouter:
        total = counts.sum(0)
        if (total == 0).any():
            missing = [m for m, t in zip(models, total, strict=True) if t == 0]
            raise ValueError(f"no evaluations at all for model(s) {missing}")
        g_acc = sum_acc.sum(0) / total
        g_cost = sum_cost.sum(0) / total
        acc = (sum_acc + cfg.prior * g_acc) / (counts + cfg.prior)
        cost = (sum_cost + cfg.prior * g_cost) / (counts + cfg.prior)
        empty = counts == 0
        acc = np.where(empty, g_acc[None, :], acc)
        cost = np.where(empty, g_cost[None, :], cost)
        return cls(cfg, models, centres, acc, cost, counts)

    def predict(self, X: Array) -> RouterOutput:
        cl = assign(np.asarray(X, dtype=np.float32), self.centres)
        return RouterOutput(self.acc[cl], self.cost[cl])

    def save(self, path: str | Path) -> Path:
        state = {
            "models": self.models,
            "centres": self.centres.tolist(),
            "acc": self.acc.tolist(),
            "cost": self.cost.tolist(),
            "counts": self.counts.tolist(),
        }
        return save_checkpoint(
            path, kind="kmeans", config=asdict(self.cfg), state_dict=state, metrics=self.metrics
        )

    @classmethod
    def from_checkpoint_dict(cls, ckpt: dict[str, Any]) -> KMeansRouter:
        s = ckpt["state_dict"]
        router = cls(
            KMeansConfig(**ckpt["config"]),
            list(s["models"]),
            *(np.asarray(s[k], dtype=np.float32) for k in ("centres", "acc", "cost", "counts")),
        )
        router.metrics = dict(ckpt.get("metrics", {}))
        return router


def choose_prior(
    build: Callable[[float], R], score: Callable[[R], float], priors: Sequence[float] = PRIORS
) -> tuple[R, dict[str, Any]]:
    """The router ``build(prior)`` with the highest ``score`` (a validation figure; ties to the
    earlier prior), and ``{"prior", "score", "scores"}`` saying what was compared. The cell sums
    are fixed, so only the tables change: no refit."""
    routers = [build(p) for p in priors]
    scores = [float(score(r)) for r in routers]
    if not np.isfinite(scores).any():
        raise ValueError(f"no prior has a finite validation score: {scores}")
    best = int(np.argmax(np.where(np.isfinite(scores), scores, -np.inf)))
    return routers[best], {
        "prior": float(priors[best]),
        "score": scores[best],
        "scores": {f"{p:g}": s for p, s in zip(priors, scores, strict=True)},
    }


def kmeans_stats(matrix: EvalMatrix, cfg: KMeansConfig) -> tuple[Array, tuple[Array, Array, Array]]:
    """K-means on the training queries, then the per-(cluster, model) sums of observed cells:
    (centres, (sum_acc, sum_cost, counts)), what ``KMeansRouter.from_stats`` takes."""
    centres, _ = local_centroids(
        matrix.embeddings, cfg.k, n_init=cfg.n_init, max_iter=cfg.max_iter, seed=cfg.seed
    )
    q, m = np.nonzero(~np.isnan(matrix.scores))
    stats = cell_stats(
        matrix.embeddings[q],
        m.astype(np.int64),
        matrix.scores[q, m],
        matrix.cost_usd[q, m],
        centres,
        len(matrix.models),
    )
    return centres, stats


def train_kmeans_router(matrix: EvalMatrix, cfg: KMeansConfig) -> KMeansRouter:
    """Centralised fit: K-means on the training queries, then the cell tables from observed cells."""
    centres, stats = kmeans_stats(matrix, cfg)
    return KMeansRouter.from_stats(cfg, matrix.models, centres, *stats)

"""Routers: one interface (p_correct and cost for query embeddings), several learners."""

from training.routers.base import (
    ROUTERS,
    Router,
    RouterOutput,
    get_router_class,
    load_router,
    predict_for,
)
from training.routers.baselines import (
    BestSingleRouter,
    ConstantRouter,
    KNNRouter,
    OracleRouter,
    RandomRouter,
)
from training.routers.kmeans import KMeansConfig, KMeansRouter, train_kmeans_router
from training.routers.mlp import MLPConfig, MLPRouter, local_train, train_mlp_router

__all__ = [
    "ROUTERS",
    "BestSingleRouter",
    "ConstantRouter",
    "KMeansConfig",
    "KMeansRouter",
    "KNNRouter",
    "MLPConfig",
    "MLPRouter",
    "OracleRouter",
    "RandomRouter",
    "Router",
    "RouterOutput",
    "get_router_class",
    "load_router",
    "local_train",
    "predict_for",
    "train_kmeans_router",
    "train_mlp_router",
]

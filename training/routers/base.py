"""The one router interface, the routing policy, and self-describing router checkpoints.

Every router answers one question: for query embeddings X [B, D], what are p_correct [B, M] and
cost_usd [B, M] for its models? The policy on top is the same for all of them:
``argmax_m p - lambda * cost`` (``training.evaluation.metrics.choose``).

Usage::

    router = load_router("mlp.pt")
    out = router.predict_for(X, ["Yi-6B", "gemini-1.5-flash-002"])
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from training.checkpoint import load_checkpoint

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class RouterOutput:
    p_correct: Array  # [B, M]
    cost_usd: Array  # [B, M]


@runtime_checkable
class Router(Protocol):
    name: str
    models: list[str]

    def predict(self, X: Array) -> RouterOutput: ...


def columns(router: Router, models: Sequence[str]) -> list[int]:
    index = {m: j for j, m in enumerate(router.models)}
    unknown = [m for m in models if m not in index]
    if unknown:
        raise KeyError(
            f"router {router.name!r} knows no model(s) {unknown}; it has {router.models}"
        )
    return [index[m] for m in models]


def predict_for(router: Router, X: Array, models: Sequence[str]) -> RouterOutput:
    """The router's predictions for the given models, in that order (KeyError for unknown ones)."""
    cols = columns(router, models)
    out = router.predict(X)
    return RouterOutput(out.p_correct[:, cols], out.cost_usd[:, cols])


# Checkpoints are training.checkpoint's format; ``kind`` names a class in this registry and
# ``state_dict`` holds the router's learned tables.
ROUTERS: dict[str, str] = {
    "mlp": "training.routers.mlp:MLPRouter",
    "kmeans": "training.routers.kmeans:KMeansRouter",
}


def get_router_class(kind: str) -> Any:
    """A router class by registry name, or by a dotted path ``package.module:Class``."""
    target = ROUTERS.get(kind, kind)
    if ":" not in target:
        raise KeyError(f"unknown router kind {kind!r} (known: {sorted(ROUTERS)}, or module:Class)")
    module, cls = target.split(":", 1)
    return getattr(importlib.import_module(module), cls)


def load_router(path: str | Path | bytes) -> Any:
    """Rebuild any saved router from its checkpoint file or bytes (dispatch on ``kind``)."""
    ckpt = load_checkpoint(path)
    if "kind" not in ckpt:
        raise ValueError(
            f"{'<bytes>' if isinstance(path, bytes) else path} is not a router "
            "checkpoint (no 'kind')"
        )
    return get_router_class(str(ckpt["kind"])).from_checkpoint_dict(ckpt)

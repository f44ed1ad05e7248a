"""Scoring: p_correct and cost of every candidate model for a batch of queries.

The seam for the routing models. :class:`ModelEmbedder` is what LOCUS offers
(``training.locus.LocusEmbedder`` satisfies it): embed a model from its evaluations, predict
P(correct) from model embeddings. :class:`Scorer` is the one method the engine calls; the LOCUS
scorer works for any registered model (new ones included, no retraining), and a trained router
(``training.routers``) plugs in through :class:`RouterScorer` for the models it was trained on.

Usage::

    scorer = LocusScorer(embedder)
    p = scorer.p_correct(pool, names, X)      # [B, len(names)]
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.routing.registry import Pool

Array = npt.NDArray[np.float32]


class ModelEmbedder(Protocol):
    """LOCUS inference: ``embed(X [n, D], y [n]) -> z [d]``, ``predict(Z [M, d], X [B, D])``."""

    @property
    def dim(self) -> int: ...

    def embed(self, X: Any, y: Any) -> Array: ...

    def predict(self, Z: Any, X: Any) -> Array: ...


def embedder_id(embedder: ModelEmbedder) -> str:
    """Identifies the weights that made an embedding: a model embedded by other weights is stale."""
    model = getattr(embedder, "model", None)
    if model is not None and hasattr(model, "state_dict"):
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
        return "locus:" + h.hexdigest()[:16]
    return f"{getattr(embedder, 'router_name', 'locus')}:{type(embedder).__name__}:{embedder.dim}"


class Scorer(Protocol):
    name: str

    def supports(self, model: str) -> bool: ...

    def p_correct(self, pool: Pool, names: list[str], X: Array) -> Array: ...


class LocusScorer:
    """P(correct) from LOCUS model embeddings: every registered model, no retraining."""

    def __init__(self, embedder: ModelEmbedder) -> None:
        self.embedder = embedder
        # "locus", or "constant" when the gateway runs without a LOCUS checkpoint
        self.name: str = getattr(embedder, "router_name", "locus")

    def supports(self, model: str) -> bool:  # noqa: ARG002 - every embedded model
        return True

    def p_correct(self, pool: Pool, names: list[str], X: Array) -> Array:
        if not names:
            return np.zeros((X.shape[0], 0), dtype=np.float32)
        return np.asarray(self.embedder.predict(pool.embeddings(names), X), dtype=np.float32)


class RouterScorer:
    """A trained router (``training.routers.base.Router``) for the models it knows."""

    def __init__(self, name: str, router: Any) -> None:
        self.name = name
        self.router = router
        self._cols = {m: i for i, m in enumerate(router.models)}

    def supports(self, model: str) -> bool:
        return model in self._cols

    def p_correct(self, pool: Pool, names: list[str], X: Array) -> Array:  # noqa: ARG002
        out = self.router.predict(X)
        p = np.asarray(out.p_correct, dtype=np.float32)
        return p[:, [self._cols[n] for n in names]]

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
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from service.routing.registry import Pool, PoolEntry

if TYPE_CHECKING:
    from training.routers.locus_kr import Evidence, KRParams, StackedEvidence

Array = npt.NDArray[np.float32]
STACKED_CACHE = 16  # candidate lists whose columns are kept per pool
POOLS_KEPT = 2  # pools whose stacked evidence is kept (the one served and the one before)
Means = npt.NDArray[np.float64]
Subsets = dict[tuple[str, ...], tuple["StackedEvidence", Means]]


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
    """P(correct) from LOCUS model embeddings: every registered model, no retraining.

    When the checkpoint says so (``embedder.routing == {"method": "locus_kr", "params": ...}``,
    as the shipped bundle's does), this is LOCUS-KR, exactly as ``junction eval generalization``
    measures it (``training/routers/locus_kr.py``): LOCUS's prior plus each model's shrunk global
    offset and kernel residual over its own stored evaluations (``PoolEntry.evidence_*``), then
    the do-no-harm rule -- every candidate but the best-supported one (highest mean evaluation
    score) gives up ``margin``, so a model is chosen over it only for a larger predicted gain. The
    returned scores are those utilities' p-terms. A model without stored evaluations keeps the
    prior. Without routing parameters (a stand-in or older checkpoint): plain LOCUS.
    """

    def __init__(self, embedder: ModelEmbedder) -> None:
        self.embedder = embedder
        # "locus", or "constant" when the gateway runs without a LOCUS checkpoint
        self.name: str = getattr(embedder, "router_name", "locus")
        routing = getattr(embedder, "routing", None) or {}
        self.kr: KRParams | None = None
        if routing.get("method") == "locus_kr":
            # imported here: the training.routers package pulls in the trained routers' modules
            from training.routers.locus_kr import KRParams

            self.kr = KRParams.from_json(routing.get("params", {}))
        # model name -> (embedding bytes, evidence array id, group key, Evidence), built once per
        # model; models whose evaluations are on the same queries (the shipped pool) share a group,
        # so a query is compared with those queries once.
        self._evidence: dict[str, tuple[bytes, int, bytes, Evidence]] = {}
        # (pool id, version) -> (pool, its stacked evidence, evidence means, candidate lists'
        # columns); the pool is held so that its id cannot be reused while the entry lives
        self._pools: OrderedDict[tuple[int, int], tuple[Pool, StackedEvidence, Means, Subsets]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def supports(self, model: str) -> bool:  # noqa: ARG002 - every embedded model
        return True

    def evidence(self, entry: PoolEntry) -> tuple[bytes, Evidence] | None:
        """The model's evaluations with LOCUS's residuals (and their group), cached per row."""
        if entry.evidence_X is None or entry.evidence_y is None or not len(entry.evidence_y):
            return None
        from training.routers.locus_kr import Evidence

        key = (entry.embedding.tobytes(), id(entry.evidence_X))
        hit = self._evidence.get(entry.name)
        if hit is None or hit[:2] != key:
            X = entry.evidence_X.astype(np.float32)
            own = self.embedder.predict(entry.embedding[None], X)[:, 0]
            group = hashlib.sha256(entry.evidence_X.tobytes()).digest()
            hit = (*key, group, Evidence.build(X, entry.evidence_y, own))
            self._evidence[entry.name] = hit
        return hit[2], hit[3]

    def stacked(
        self, pool: Pool, names: list[str]
    ) -> tuple[StackedEvidence, npt.NDArray[np.float64]]:
        """The candidates' evidence stacked for one vectorised pass, and their evidence means
        (-inf: none). The pool's evidence is stacked once per pool (one copy of its query
        vectors); each candidate list takes its columns, kept for the next requests. Calls come
        from the event loop and from worker threads (the cost knob's calibration), hence the lock.
        """
        from training.routers.locus_kr import StackedEvidence

        assert self.kr is not None
        with self._lock:
            key = (id(pool), pool.version)
            whole = self._pools.get(key)
            if whole is None or whole[0] is not pool:
                entries = pool.entries
                st = StackedEvidence.build([self.evidence(e) for e in entries], self.kr.alpha_g)
                means = np.array(
                    [-np.inf if e.evidence_mean is None else e.evidence_mean for e in entries],
                    dtype=np.float64,
                )
                whole = (pool, st, means, {})
                self._pools[key] = whole
                while len(self._pools) > POOLS_KEPT:
                    self._pools.popitem(last=False)
            subsets = whole[3]
            hit = subsets.get(tuple(names))
            if hit is None:
                cols = [pool.index(n) for n in names]
                hit = (whole[1].columns(cols), whole[2][cols])
                subsets[tuple(names)] = hit
                while len(subsets) > STACKED_CACHE:
                    subsets.pop(next(iter(subsets)))
            return hit

    def prepare(self, pool: Pool) -> None:
        """Build the pool's evidence (each model's residuals, stacked) before the pool is served,
        so that the first decision after a registry change does not pay for it (tens of ms for
        the shipped pool, growing with the evaluations onboarded)."""
        if self.kr is not None and len(pool):
            self.stacked(pool, pool.names)

    def p_correct(self, pool: Pool, names: list[str], X: Array) -> Array:
        if not names:
            return np.zeros((X.shape[0], 0), dtype=np.float32)
        p = np.asarray(self.embedder.predict(pool.embeddings(names), X), dtype=np.float32)
        if self.kr is None:
            return p
        from training.routers.locus_kr import kr_predict_stacked, penalise, unit

        st, means = self.stacked(pool, names)
        p = kr_predict_stacked(st, p, self.kr, unit(X))
        if np.isfinite(means).any():
            p = penalise(p, means, self.kr.margin)
        return p


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

"""Routers that only make sense around federation: a client-local router restricted to the models
its client has logged, and the personalised mixture of a federated and a local router.

Personalisation (NOTES.md (b)): for each model, the client mixes the federated and its local
estimator with weights inversely proportional to each one's mean absolute calibration error on the
client's own data, separately for accuracy and cost (cost errors in log space). A model the
client never logged takes the federated estimate alone. The paper measures the errors on the
training points; a local router fitted to those same points looks better there than it is, so
:meth:`PersonalisedRouter.fit` takes the data to measure on, and ``simulate.py`` passes rows the
local estimator did not train on (a held-out quarter of the client's training rows, with a local
router refitted without them).

Usage::

    mix = PersonalisedRouter.fit(fed_router, local_router, client.train)
    out = mix.predict(X)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from training.data.matrix import EvalMatrix
from training.evaluation.metrics import (
    LAMBDAS,
    common_range_auc,
    frontier,
    pool_cost_range,
    upper_hull,
)
from training.routers.base import Router, RouterOutput

Array = npt.NDArray[np.float32]
UNKNOWN_COST = 1e6  # a model a local router never saw: never worth its cost (the paper's code)


class MaskedRouter:
    """A router limited to ``known`` model indices: the rest get p = 0 and a prohibitive cost."""

    def __init__(self, inner: Router, known: Sequence[int]) -> None:
        self.inner = inner
        self.name = f"{inner.name}-local"
        self.models = list(inner.models)
        self.known = np.zeros(len(self.models), dtype=bool)
        self.known[list(known)] = True

    def predict(self, X: Array) -> RouterOutput:
        out = self.inner.predict(X)
        p = np.where(self.known[None, :], out.p_correct, 0.0).astype(np.float32)
        c = np.where(self.known[None, :], out.cost_usd, UNKNOWN_COST).astype(np.float32)
        return RouterOutput(p, c)


def calibration_errors(router: Router, data: EvalMatrix) -> tuple[Array, Array]:
    """Per model: mean |p - score| and mean |log cost_pred - log cost| over the observed cells
    (NaN where the model has none)."""
    out = router.predict(data.embeddings)
    obs = data.observed
    n = obs.sum(0)
    acc_err = np.where(obs, np.abs(out.p_correct - np.nan_to_num(data.scores)), 0.0).sum(0)
    lc_true = np.log(np.maximum(np.nan_to_num(data.cost_usd, nan=1.0), 1e-12))
    lc_pred = np.log(np.maximum(out.cost_usd, 1e-12))
    cost_err = np.where(obs, np.abs(lc_pred - lc_true), 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (
            np.where(n > 0, acc_err / n, np.nan).astype(np.float32),
            np.where(n > 0, cost_err / n, np.nan).astype(np.float32),
        )


def inverse_error_weight(err_fed: Array, err_local: Array, eps: float = 1e-6) -> Array:
    """Weight of the federated estimator: (1/e_f) / (1/e_f + 1/e_l); 1 where local has no data."""
    w = (err_local + eps) / (err_fed + err_local + 2 * eps)
    return np.where(np.isnan(err_local) | np.isnan(err_fed), 1.0, w).astype(np.float32)


class PersonalisedRouter:
    """Per-model mixture of a federated and a local router (weights for accuracy and for cost)."""

    name = "personalised"

    def __init__(self, federated: Router, local: Router, w_acc: Array, w_cost: Array) -> None:
        if list(federated.models) != list(local.models):
            raise ValueError("the federated and local routers must score the same models")
        self.federated, self.local = federated, local
        self.models = list(federated.models)
        self.w_acc, self.w_cost = w_acc.astype(np.float32), w_cost.astype(np.float32)

    @classmethod
    def fit(
        cls,
        federated: Router,
        local: Router,
        data: EvalMatrix,
        *,
        local_for_errors: Router | None = None,
    ) -> PersonalisedRouter:
        """Weights from errors on ``data``; ``local_for_errors`` (default ``local``) is the local
        estimator whose errors are measured, e.g. one trained without ``data``."""
        fa, fc = calibration_errors(federated, data)
        la, lc = calibration_errors(local_for_errors or local, data)
        return cls(federated, local, inverse_error_weight(fa, la), inverse_error_weight(fc, lc))

    def predict(self, X: Array) -> RouterOutput:
        f, loc = self.federated.predict(X), self.local.predict(X)
        # Where the local router does not know a model its weight is 0 (w = 1 above), so its
        # prohibitive placeholder cost never enters; mix costs in log space.
        p = self.w_acc * f.p_correct + (1 - self.w_acc) * loc.p_correct
        lf = np.log(np.maximum(f.cost_usd, 1e-12))
        ll = np.log(np.maximum(np.minimum(loc.cost_usd, UNKNOWN_COST), 1e-12))
        c = np.exp(self.w_cost * lf + (1 - self.w_cost) * ll)
        return RouterOutput(p.astype(np.float32), c.astype(np.float32))


CostRange = tuple[float, float]


def router_curve(
    router: Router, data: EvalMatrix
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The realised (mean cost, accuracy) frontier over the paper's lambda grid."""
    out = router.predict(data.embeddings)
    return frontier(out.p_correct, out.cost_usd, data.scores, data.cost_usd, LAMBDAS)


def router_auc(router: Router, data: EvalMatrix, cost_range: CostRange | None = None) -> float:
    """Frontier AUC of a router on a fully labelled matrix, on the common scale of
    :func:`training.evaluation.metrics.common_range_auc` (the one ``junction eval`` uses): mean
    running-best accuracy over ``cost_range`` on a log axis, 0 below the router's cheapest point.
    A report passes one ``cost_range`` (its pool's cheapest to dearest model) to every router;
    the default is ``data``'s own pool range."""
    lo, hi = cost_range if cost_range is not None else pool_cost_range(data.cost_usd)
    return common_range_auc(*router_curve(router, data), lo, hi)


def router_aucs(
    router: Router,
    data: EvalMatrix,
    cost_range: CostRange,
    row_sets: Sequence[npt.NDArray[np.int64]],
) -> list[float]:
    """:func:`router_auc` on each set of ``data``'s rows (queries), on one ``cost_range``, from
    one prediction over all of ``data``."""
    out = router.predict(data.embeddings)
    lo, hi = cost_range
    return [
        common_range_auc(
            *frontier(out.p_correct[r], out.cost_usd[r], data.scores[r], data.cost_usd[r], LAMBDAS),
            lo, hi,
        )
        for r in row_sets
    ]  # fmt: skip


def single_models(data: EvalMatrix) -> dict[str, tuple[float, float]]:
    """Each model's (mean cost, accuracy) on ``data``; an unevaluated query counts as wrong."""
    obs = data.observed
    return {
        m: (
            float(np.mean(np.where(obs[:, j], data.cost_usd[:, j], 0.0))),
            float(np.mean(np.where(obs[:, j], data.scores[:, j], 0.0))),
        )
        for j, m in enumerate(data.models)
    }


def hull_auc(data: EvalMatrix, cost_range: CostRange | None = None) -> float:
    """The single-model hull's AUC on ``data``, same scale as :func:`router_auc`: the upper hull
    of the models' (cost, accuracy) points, scored by ``common_range_auc`` on its vertices."""
    lo, hi = cost_range if cost_range is not None else pool_cost_range(data.cost_usd)
    pts = list(single_models(data).values())
    hc, ha = upper_hull(np.array([c for c, _ in pts]), np.array([a for _, a in pts]))
    return common_range_auc(hc, ha, lo, hi)


def paired_bootstrap(
    a: Router,
    b: Router,
    data: EvalMatrix,
    cost_range: CostRange,
    *,
    n: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """AUC(a) - AUC(b) on ``n`` resamples of ``data``'s queries (the same resample for both,
    drawn from ``seed``): how far a gap between two routers on one test set is resolved. Both
    routers must cover ``data``'s model columns. Returns the gap on ``data`` itself, the
    resamples' standard deviation, their 2.5 and 97.5 percentiles, and the share where ``a``
    is above ``b``."""
    pa, pb = a.predict(data.embeddings), b.predict(data.embeddings)
    lo, hi = cost_range

    def auc(p: RouterOutput, idx: npt.NDArray[np.int64]) -> float:
        s, c = data.scores[idx], data.cost_usd[idx]
        curve = frontier(p.p_correct[idx], p.cost_usd[idx], s, c, LAMBDAS)
        return common_range_auc(*curve, lo, hi)

    every = np.arange(data.num_queries)
    rng = np.random.default_rng(seed)
    gaps = np.array(
        [
            auc(pa, idx) - auc(pb, idx)
            for idx in (rng.integers(0, data.num_queries, data.num_queries) for _ in range(n))
        ]
    )
    return {
        "gap": auc(pa, every) - auc(pb, every),
        "sd": float(gaps.std(ddof=1)),
        "lo": float(np.percentile(gaps, 2.5)),
        "hi": float(np.percentile(gaps, 97.5)),
        "share_above": float((gaps > 0).mean()),
        "resamples": float(n),
    }

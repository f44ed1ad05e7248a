"""Routing metrics, pure numpy and small enough to check by hand.

Conventions: ``scores`` are the true 0/1 (or [0, 1]) outcomes [Q, M] with NaN where a model was not
evaluated; correctness metrics use observed cells only. A router's choice is one model index per
query; its realised accuracy and cost are the chosen model's true score and true cost.

The accuracy-cost frontier follows the federated-routing paper: sweep lambda over 100 log-spaced
values in [1e-2, 1e7] (applied to USD costs per query: at 1e-2 the cost term is negligible, at 1e7
it dominates, for per-query costs between about 1e-6 and 1e-1 USD), record each lambda's realised
(mean cost, mean accuracy), and report the normalised AUC, trapz(acc, cost) / (cost_max - cost_min):
the mean accuracy across the cost range the router spans.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.floating]
LAMBDAS = np.logspace(-2, 7, 100)


def _obs(p: Array, scores: Array) -> tuple[Array, Array]:
    obs = ~np.isnan(scores)
    return np.asarray(p)[obs], np.asarray(scores)[obs]


def correctness_accuracy(p: Array, scores: Array) -> float:
    """Fraction of observed cells where (p > 0.5) matches (score > 0.5)."""
    pp, ss = _obs(p, scores)
    return float(((pp > 0.5) == (ss > 0.5)).mean())


def log_loss(p: Array, scores: Array, eps: float = 1e-7) -> float:
    pp, ss = _obs(p, scores)
    pp = np.clip(pp, eps, 1 - eps)
    return float(-(ss * np.log(pp) + (1 - ss) * np.log(1 - pp)).mean())


def auroc(p: Array, scores: Array) -> float:
    """Area under the ROC curve over observed cells (ties count one half)."""
    pp, ss = _obs(p, scores)
    pos, neg = pp[ss > 0.5], pp[ss <= 0.5]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def choose(p: Array, cost: Array, lam: float) -> npt.NDArray[np.int64]:
    """argmax_m p - lam * cost per row; ties go to the cheaper model."""
    util = np.asarray(p, dtype=np.float64) - lam * np.asarray(cost, dtype=np.float64)
    best = util.max(axis=1, keepdims=True)
    tied = util >= best - 1e-12
    masked_cost = np.where(tied, cost, np.inf)
    return np.argmin(masked_cost, axis=1).astype(np.int64)


def choose_with_default(
    p: Array, cost: Array, lam: float, default: int, margin: float
) -> npt.NDArray[np.int64]:
    """Like :func:`choose`, but leave the default model only for a utility gain above ``margin``.

    This is the product's policy for a pool with a strong all-rounder: a router whose per-query
    predictions are noisy should not trade a sure default for a predicted gain within its noise.
    """
    util = np.asarray(p, dtype=np.float64) - lam * np.asarray(cost, dtype=np.float64)
    best = choose(p, cost, lam)
    rows = np.arange(len(best))
    keep = util[rows, best] <= util[:, default] + margin
    return np.where(keep, default, best).astype(np.int64)


def tune_margin(
    p: Array, cost: Array, scores: Array, default: int, grid: Array | None = None
) -> tuple[float, float]:
    """The margin (from ``grid``) that maximises routing accuracy at lambda = 0 on held-out data."""
    grid = np.linspace(0.0, 0.3, 31) if grid is None else grid
    zeros = np.zeros_like(np.asarray(scores))
    results = [
        (
            realised(choose_with_default(p, cost, 0.0, default, float(m)), scores, zeros)[0],
            -float(m),
        )
        for m in grid
    ]
    acc, neg_margin = max(results)
    return -neg_margin, acc


def realised(choice: npt.NDArray[np.int64], scores: Array, costs: Array) -> tuple[float, float]:
    """(mean accuracy, mean cost) of a choice; an unevaluated chosen cell counts as wrong, cost 0."""
    rows = np.arange(len(choice))
    acc = np.nan_to_num(np.asarray(scores)[rows, choice], nan=0.0)
    cost = np.nan_to_num(np.asarray(costs)[rows, choice], nan=0.0)
    return float(acc.mean()), float(cost.mean())


def routing_accuracy(p: Array, scores: Array) -> float:
    """Accuracy of routing each query to its highest-p model (lambda = 0)."""
    return realised(np.argmax(np.asarray(p), axis=1), scores, np.zeros_like(scores))[0]


def routing_accuracy_observed(p: Array, scores: Array) -> float:
    """Routing among the models evaluated on each query (for sparse logs); mean score of the pick."""
    seen = ~np.isnan(scores)
    rows = seen.any(axis=1)
    pick = np.where(seen, p, -np.inf)[rows].argmax(axis=1)
    return float(np.mean(np.asarray(scores)[rows][np.arange(len(pick)), pick]))


def best_single_accuracy(scores: Array) -> float:
    """Mean score of the single model that is best over its observed cells."""
    return float(np.nanmax(np.nanmean(scores, axis=0)))


def oracle_accuracy(scores: Array) -> float:
    """Fraction of queries (with any evaluation) that at least one model answered correctly."""
    rows = (~np.isnan(scores)).any(axis=1)
    return float(np.mean(np.nanmax(np.asarray(scores)[rows], axis=1) >= 0.5))


def frontier(
    p: Array, cost_pred: Array, scores: Array, costs: Array, lambdas: Array = LAMBDAS
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Realised (mean cost [L], mean accuracy [L]) of the policy at each lambda."""
    pts = [realised(choose(p, cost_pred, float(lam)), scores, costs) for lam in lambdas]
    acc = np.array([a for a, _ in pts])
    cost = np.array([c for _, c in pts])
    return cost, acc


def normalised_auc(cost: Array, acc: Array) -> float:
    """trapz(acc, cost) / (cost_max - cost_min) over points sorted by cost.

    Points at the same cost are averaged first. A frontier that spans no cost range (one distinct
    cost) has no area: its normalised AUC is defined as its accuracy there.
    """
    cost, acc = np.asarray(cost, dtype=np.float64), np.asarray(acc, dtype=np.float64)
    uniq, inv = np.unique(cost, return_inverse=True)
    mean_acc = np.bincount(inv, weights=acc) / np.bincount(inv)
    if len(uniq) == 1:
        return float(mean_acc[0])
    return float(np.trapezoid(mean_acc, uniq) / (uniq[-1] - uniq[0]))


def upper_hull(cost: Array, acc: Array) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Vertices of the upper-left convex hull of (cost, accuracy) points, by increasing cost.

    This is what mixing single models at random can reach: starting at the cheapest point and
    ending at the most accurate one (paying more than that buys nothing).
    """
    pts = sorted(zip(np.asarray(cost, dtype=float), np.asarray(acc, dtype=float), strict=True))
    hull: list[tuple[float, float]] = []
    for c, a in pts:
        if hull and c == hull[-1][0]:
            if a <= hull[-1][1]:
                continue
            hull.pop()
        while len(hull) >= 2:
            (c1, a1), (c2, a2) = hull[-2], hull[-1]
            if (a2 - a1) * (c - c1) <= (a - a1) * (c2 - c1):  # the middle point lies on/below
                hull.pop()
            else:
                break
        hull.append((c, a))
    best = int(np.argmax([a for _, a in hull]))
    hull = hull[: best + 1]
    return np.array([c for c, _ in hull]), np.array([a for _, a in hull])


def hull_accuracy(hull_cost: Array, hull_acc: Array, at_cost: Array) -> npt.NDArray[np.float64]:
    """The hull's accuracy at given costs (flat at the best accuracy beyond the last vertex)."""
    return np.interp(at_cost, hull_cost, hull_acc, left=np.nan, right=float(hull_acc[-1]))


def hull_auc(hull_cost: Array, hull_acc: Array, cost: Array, *, grid: int = 512) -> float:
    """Normalised AUC of the single-model hull over the cost range of a frontier (clipped to the
    hull's own lowest cost): what mixing single models achieves over the same budgets."""
    lo, hi = max(float(np.min(cost)), float(hull_cost[0])), float(np.max(cost))
    if hi <= lo:
        return float("nan")
    xs = np.linspace(lo, hi, grid)
    return normalised_auc(xs, hull_accuracy(hull_cost, hull_acc, xs))


def pool_cost_range(costs: Array) -> tuple[float, float]:
    """The common cost range of a pool: its cheapest to its dearest model's mean cost per query.

    ``costs`` is ``[N, M]`` (NaN where a model has no evaluation of a query). Every router in a
    report is scored over this one range by :func:`common_range_auc`, so AUCs compare like for like.
    """
    mean = np.nanmean(np.asarray(costs, dtype=np.float64), axis=0)
    mean = mean[np.isfinite(mean) & (mean > 0)]
    return float(mean.min()), float(mean.max())


def common_range_auc(cost: Array, acc: Array, lo: float, hi: float, *, grid: int = 512) -> float:
    """Mean accuracy of a frontier over the log-spaced cost range ``[lo, hi]`` shared by a report.

    The frontier is the running best accuracy of its points by increasing cost (a router can always
    spend less than it is allowed), linearly interpolated between points, flat beyond its dearest
    point, and 0 below its cheapest one (a budget it cannot meet earns nothing). A frontier that
    covers the whole range at accuracy ``a`` scores ``a``; the single-model hull gets its figure
    from the same function (pass the hull's vertices), so routers, baselines and the hull share one
    scale whatever range each of them spans on its own.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 or hi <= lo:
        raise ValueError(f"common_range_auc needs 0 < lo < hi, got lo={lo}, hi={hi}")
    order = np.argsort(np.asarray(cost, dtype=float), kind="stable")
    c = np.asarray(cost, dtype=float)[order]
    a = np.maximum.accumulate(np.asarray(acc, dtype=float)[order])
    xs = np.geomspace(lo, hi, grid)
    front = np.interp(xs, c, a, left=0.0, right=float(a[-1]))
    front[xs < c[0]] = 0.0
    return float(front.mean())


def fraction_above_hull(
    cost: Array, acc: Array, hull_cost: Array, hull_acc: Array, *, grid: int = 512
) -> dict[str, float]:
    """Over the cost range both cover, the fraction where the frontier is at or above the hull.

    The frontier is the running best accuracy of its points by increasing cost (a router can always
    spend less than its budget), linearly interpolated between points (a router, like the hull,
    can mix two operating points at random), evaluated on a log-spaced grid of costs.
    """
    order = np.argsort(cost)
    c, a = (
        np.asarray(cost, dtype=float)[order],
        np.maximum.accumulate(np.asarray(acc, dtype=float)[order]),
    )
    lo, hi = max(c[0], hull_cost[0]), c[-1]
    if hi <= lo:
        return {"fraction": float("nan"), "cost_lo": float(lo), "cost_hi": float(hi)}
    xs = np.geomspace(lo, hi, grid)
    front = np.interp(xs, c, a)
    above = front >= hull_accuracy(hull_cost, hull_acc, xs) - 1e-9
    margin = front - hull_accuracy(hull_cost, hull_acc, xs)
    return {
        "fraction": float(above.mean()),
        "cost_lo": float(lo),
        "cost_hi": float(hi),
        "mean_margin": float(margin.mean()),
        "min_margin": float(margin.min()),
    }

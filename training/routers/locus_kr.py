"""LOCUS-KR: LOCUS's prior, corrected by a model's own evaluations, with a do-no-harm default.

The routing method the gateway serves and ``junction eval generalization`` measures. For a model
m with evaluations (x_i, y_i), i = 1..n, and a query x:

1. prior: q_m(x) = LOCUS P(correct) from the model embedding z_m (one forward pass over the n
   evaluations) -- what every model shares through the seen models;
2. global correction: g_m = sum_i e_i / (n + alpha_g), e_i = y_i - q_m(x_i) (a shrunk offset that
   fixes the prior's base rate for this model);
3. kernel residual: r_m(x) = sum_{i in N_K(x)} w_i (e_i - g_m) / (sum w_i + alpha), over the K
   evaluations nearest to x (cosine), w_i = exp(beta (cos(x, x_i) - 1)); with few or distant
   neighbours the sum is small against alpha and the prediction falls back to the prior;
4. p_m(x) = clip(q_m(x) + g_m + r_m(x), 0.01, 0.99).

The decision (:func:`penalise`, then argmax of p - lambda * cost) stays with the default model --
the best-supported one, whose evaluations score highest -- unless another model's utility is
higher by ``margin``. With a large
margin this is exactly the best-average pick; the margin and (K, beta, alpha, alpha_g) are chosen on
leave-models-out validation folds (``training/evaluation/generalization.py``).

Usage::

    kr = KRParams(k=25, beta=10.0, alpha=0.5, alpha_g=20.0, margin=0.05)
    ev = Evidence.build(X_m, y_m, prior_on_own=q_m_on_X_m)      # once per model
    p = kr_predict(ev, prior_q, kr, X=X_queries)                # [B]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
P_CLIP = (0.01, 0.99)


@dataclass(frozen=True)
class KRParams:
    """The method's hyper-parameters (chosen on validation folds; stored in the bundle)."""

    k: int = 25  # nearest evaluations in the kernel residual (0 = global correction only)
    beta: float = 10.0  # kernel sharpness on cosine similarity
    alpha: float = 0.5  # shrinkage of the kernel residual towards 0 (pseudo-weight)
    alpha_g: float = 20.0  # shrinkage of the global offset towards 0 (pseudo-count)
    margin: float = 0.05  # utility gain needed to leave the default (best-supported) model

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KRParams:
        return cls(
            **{k: type(getattr(cls(), k))(v) for k, v in d.items() if k in cls.__dataclass_fields__}
        )


@dataclass(frozen=True)
class Evidence:
    """A model's evaluations as the method uses them: unit query vectors, residuals, mean."""

    X: Array  # [n, D] L2-normalised query embeddings
    resid: Array  # [n] y_i - q_m(x_i)
    mean: float  # mean score of the evaluations (what the best-average pick ranks by)
    n: int

    @classmethod
    def build(cls, X: npt.ArrayLike, y: npt.ArrayLike, prior_on_own: npt.ArrayLike) -> Evidence:
        Xa = np.asarray(X, dtype=np.float32)
        norm = np.linalg.norm(Xa, axis=1, keepdims=True)
        Xa = Xa / np.maximum(norm, 1e-12)
        ya = np.asarray(y, dtype=np.float32)
        resid = ya - np.asarray(prior_on_own, dtype=np.float32)
        return cls(Xa, resid.astype(np.float32), float(ya.mean()) if len(ya) else 0.0, len(ya))


def unit(X: npt.ArrayLike) -> Array:
    Xa = np.asarray(X, dtype=np.float32)
    return Xa / np.maximum(np.linalg.norm(Xa, axis=1, keepdims=True), 1e-12)


def global_offset(resid: Array, alpha_g: float) -> float:
    return float(resid.sum() / (len(resid) + alpha_g)) if len(resid) else 0.0


def topk(sims: Array, k: int) -> tuple[npt.NDArray[np.int64], Array]:
    """Indices [B, k] and similarities [B, k] of the k largest entries per row (k <= n)."""
    k = min(k, sims.shape[1])
    idx = (
        np.argpartition(-sims, k - 1, axis=1)[:, :k]
        if k < sims.shape[1]
        else np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
    )
    return np.asarray(idx, dtype=np.int64), np.take_along_axis(sims, idx, axis=1)


def kernel_residual(
    nn_idx: npt.NDArray[np.int64],
    nn_sim: Array,
    resid: Array,
    *,
    k: int,
    beta: float,
    alpha: float,
) -> Array:
    """r(x) [B] from each query's nearest evaluations (``nn_idx`` sorted or not, first k used).

    ``nn_idx``/``nn_sim`` hold at least k neighbours per row ordered by decreasing similarity.
    """
    if k <= 0 or nn_idx.shape[1] == 0:
        return np.zeros(nn_idx.shape[0], dtype=np.float32)
    idx, sim = nn_idx[:, :k], nn_sim[:, :k]
    w = np.exp(beta * (sim - 1.0))
    return ((w * resid[idx]).sum(1) / (w.sum(1) + alpha)).astype(np.float32)


def sorted_neighbours(sims: Array, k: int) -> tuple[npt.NDArray[np.int64], Array]:
    """The k nearest evaluations per query, by decreasing similarity."""
    idx, s = topk(sims, k)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(s, order, axis=1)


def kr_predict(
    ev: Evidence,
    prior: Array,
    params: KRParams,
    *,
    X: Array | None = None,
    neighbours: tuple[npt.NDArray[np.int64], Array] | None = None,
) -> Array:
    """P(correct) [B] of one model on B queries: prior [B] + global offset + kernel residual.

    Pass the query embeddings ``X`` [B, D] (unit norm), or precomputed ``neighbours`` (indices
    and similarities of each query's nearest evaluations, decreasing similarity).
    """
    g = global_offset(ev.resid, params.alpha_g)
    p = np.asarray(prior, dtype=np.float32) + g
    if params.k > 0 and ev.n > 0:
        if neighbours is None:
            if X is None:
                raise ValueError("kr_predict needs X or neighbours")
            neighbours = sorted_neighbours(unit(X) @ ev.X.T, params.k)
        p = p + kernel_residual(
            neighbours[0], neighbours[1], ev.resid - g, k=params.k, beta=params.beta,
            alpha=params.alpha,
        )  # fmt: skip
    return np.clip(p, *P_CLIP).astype(np.float32)


# Scores below every cosine similarity: the padding of a group shorter than the longest sorts last.
_PAD_SIM = np.float32(-2.0)
STACK_CELLS = 1 << 22  # query x evidence similarities held at once by ``kr_predict_stacked``


@dataclass(frozen=True)
class StackedEvidence:
    """Several models' evidence laid out for one vectorised LOCUS-KR pass (the gateway's scorer).

    Models whose evaluations are on the same queries (the shipped pool) share a group, whose
    queries are compared with a query once. Groups are zero-padded to the longest; the padding
    gets zero kernel weight, so each model's result is :func:`kr_predict` on its own evidence.
    """

    X: Array  # [G, n_max, D] unit query vectors of each group
    pad: npt.NDArray[np.bool_]  # [G, n_max] True on padding
    group: npt.NDArray[np.int64]  # [C] each column's group; -1: no evidence (the prior alone)
    resid: Array  # [C, n_max] e_i - g of the column's evaluations, 0 on padding
    offset: Array  # [C] global offset g (0 without evidence)

    @classmethod
    def build(
        cls, columns: Sequence[tuple[bytes, Evidence] | None], alpha_g: float
    ) -> StackedEvidence:
        """``columns``: per candidate, its (group key, evidence), or None when it has none."""
        keys: dict[bytes, int] = {}
        members: list[Evidence] = []
        for col in columns:
            if col is not None and col[0] not in keys:
                keys[col[0]] = len(members)
                members.append(col[1])
        n_max = max((e.n for e in members), default=0)
        dim = members[0].X.shape[1] if members else 0
        X = np.zeros((len(members), n_max, dim), dtype=np.float32)
        pad = np.ones((len(members), n_max), dtype=bool)
        for g, e in enumerate(members):
            X[g, : e.n] = e.X
            pad[g, : e.n] = False
        group = np.full(len(columns), -1, dtype=np.int64)
        resid = np.zeros((len(columns), n_max), dtype=np.float32)
        offset = np.zeros(len(columns), dtype=np.float32)
        for c, col in enumerate(columns):
            if col is None:
                continue
            key, e = col
            g_c = global_offset(e.resid, alpha_g)
            group[c], offset[c] = keys[key], g_c
            resid[c, : e.n] = e.resid - g_c
        return cls(X, pad, group, resid, offset)

    def columns(self, idx: Sequence[int]) -> StackedEvidence:
        """These columns only, in ``idx``'s order; the groups' query vectors are shared, not
        copied (a pool is stacked once, each candidate list takes its columns)."""
        i = np.asarray(idx, dtype=np.int64)
        return StackedEvidence(self.X, self.pad, self.group[i], self.resid[i], self.offset[i])


def kr_predict_stacked(st: StackedEvidence, prior: Array, params: KRParams, X: Array) -> Array:
    """P(correct) [B, C] of every column at once: :func:`kr_predict` per column with evidence,
    vectorised; a column without evidence keeps its prior.

    ``prior`` [B, C] is LOCUS's prediction, ``X`` [B, D] the queries (unit norm). Queries go in
    chunks so that at most ``STACK_CELLS`` similarities are held at once.
    """
    p = np.asarray(prior, dtype=np.float32) + st.offset[None, :]
    n_groups, n_max = st.pad.shape
    cols = np.flatnonzero(st.group >= 0)
    if params.k > 0 and n_max > 0 and len(cols):
        k = min(params.k, n_max)
        flat = st.X.reshape(n_groups * n_max, -1).T  # [D, G * n_max]
        R = st.resid[cols]  # [C', n_max]
        g_of = st.group[cols]
        step = max(1, STACK_CELLS // (n_groups * n_max))
        for b0 in range(0, len(X), step):
            xb = np.asarray(X[b0 : b0 + step], dtype=np.float32)
            sims = (xb @ flat).reshape(len(xb), n_groups, n_max)
            sims[:, st.pad] = _PAD_SIM
            if k < n_max:
                idx = np.argpartition(-sims, k - 1, axis=2)[:, :, :k]
                s = np.take_along_axis(sims, idx, axis=2)
            else:
                idx = np.broadcast_to(np.arange(n_max), sims.shape)
                s = sims
            order = np.argsort(-s, axis=2, kind="stable")
            idx = np.take_along_axis(idx, order, axis=2)  # [b, G, k], nearest first
            s = np.take_along_axis(s, order, axis=2)
            w = np.exp(params.beta * (s - 1.0))
            w[np.take_along_axis(np.broadcast_to(st.pad, sims.shape), idx, axis=2)] = 0.0
            wc, ic = w[:, g_of, :], idx[:, g_of, :]  # [b, C', k]
            rc = R[np.arange(len(cols))[None, :, None], ic]
            r = (wc * rc).sum(2) / (wc.sum(2) + params.alpha)
            p[b0 : b0 + step, cols] += r.astype(np.float32)
    p[:, cols] = np.clip(p[:, cols], *P_CLIP)  # a column without evidence keeps its prior
    return p


def decide(p: Array, cost: Array, lam: float, default: int, margin: float) -> npt.NDArray[np.int64]:
    """argmax_m p - lam * cost, but stay with ``default`` unless the gain exceeds ``margin``."""
    util = np.asarray(p, dtype=np.float64) - lam * np.asarray(cost, dtype=np.float64)
    best = util.argmax(axis=1)
    rows = np.arange(len(best))
    keep = util[rows, best] <= util[:, default] + margin
    return np.where(keep, default, best).astype(np.int64)


def penalise(p: Array, means: npt.ArrayLike, margin: float) -> Array:
    """The do-no-harm rule as scores: every model but the default (best evidence mean) loses
    ``margin``, so argmax_m p - lam * cost leaves the default only for a gain above the margin.

    This is what the gateway's scorer returns and what the benchmark routes with, at every lambda.
    """
    if margin <= 0 or p.shape[1] == 0:
        return p
    out = np.asarray(p, dtype=np.float32) - np.float32(margin)
    d = default_model(means)
    out[:, d] += np.float32(margin)
    return out


def default_model(means: npt.ArrayLike) -> int:
    """The best-supported model: the one whose evaluations score highest (the best-average pick)."""
    return int(np.argmax(np.asarray(means)))


# --------------------------------------------------------------------------------------------
# do no harm with uncertainty (issue 9 lever; measured by ``junction eval generalization``, not
# served): leave the best-supported model only for a gain larger than its uncertainty


def evidence_weight(nn_sim: Array, k: int, beta: float) -> Array:
    """W(x) [B]: the kernel weight sum exp(beta (cos - 1)) over each query's k nearest evaluations
    (``nn_sim`` by decreasing similarity) -- how much of the model's evidence lies near x."""
    if k <= 0 or nn_sim.shape[1] == 0:
        return np.zeros(nn_sim.shape[0], dtype=np.float32)
    return np.exp(beta * (nn_sim[:, :k] - 1.0)).sum(1).astype(np.float32)


def prediction_sd(p: npt.ArrayLike, n: int, weight: npt.ArrayLike, params: KRParams) -> Array:
    """The standard error of a LOCUS-KR prediction, read off the method's own pseudo-counts.

    The global offset is a mean of n residuals shrunk by alpha_g pseudo-observations, the kernel
    residual a weighted mean of weight W(x) shrunk by alpha: as Gaussian posteriors with Bernoulli
    noise p (1 - p) their variances are p (1 - p) / (n + alpha_g) and p (1 - p) / (W(x) + alpha).
    Few evaluations (n) or a query far from all of them (W) leave the prediction uncertain.
    """
    pa = np.clip(np.asarray(p, dtype=np.float64), *P_CLIP)
    w = np.asarray(weight, dtype=np.float64)
    var = pa * (1 - pa) * (1.0 / (n + params.alpha_g) + 1.0 / (w + max(params.alpha, 1e-6)))
    return np.sqrt(var).astype(np.float32)


def utility_default(means: npt.ArrayLike, mean_costs: npt.ArrayLike, lam: float) -> int:
    """The best-supported model at this lambda: highest evidence mean minus lambda x mean cost
    (at lambda 0 the best-average pick; along lambda it walks the single models' hull)."""
    u = np.asarray(means, dtype=np.float64) - lam * np.asarray(mean_costs, dtype=np.float64)
    return int(np.argmax(u))


def decide_dnh(
    p: npt.ArrayLike,
    sd: npt.ArrayLike,
    cost: npt.ArrayLike,
    lam: float,
    default: int,
    gamma: float,
    margin: float = 0.0,
) -> npt.NDArray[np.int64]:
    """Do no harm: per query, the model whose utility gain over ``default`` minus gamma standard
    errors of that gain (sqrt(sd_m^2 + sd_default^2)) and ``margin`` is largest, if positive;
    otherwise ``default``. gamma = margin = 0 is argmax p - lam * cost."""
    P, S = np.asarray(p, dtype=np.float64), np.asarray(sd, dtype=np.float64)
    util = P - lam * np.asarray(cost, dtype=np.float64)
    gain = util - util[:, [default]]
    lcb = gain - gamma * np.sqrt(S**2 + S[:, [default]] ** 2) - margin
    lcb[:, default] = 0.0
    best = lcb.argmax(axis=1)
    rows = np.arange(len(best))
    return np.where(lcb[rows, best] > 0.0, best, default).astype(np.int64)


def calibrate_prior(
    q_own: npt.ArrayLike, y: npt.ArrayLike, strength: float, iters: int = 25
) -> tuple[float, float]:
    """Per-model calibration of the prior: (a, b) of sigmoid(a logit q + b) fitted to the model's
    own evaluations by Newton's method, with a Gaussian penalty strength ((a - 1)^2 + b^2) that
    keeps it at the identity when evidence is scarce."""
    qa = np.clip(np.asarray(q_own, dtype=np.float64), *P_CLIP)
    ya = np.asarray(y, dtype=np.float64)
    if len(ya) == 0:
        return 1.0, 0.0
    z = np.log(qa / (1 - qa))
    F = np.stack([z, np.ones_like(z)], 1)
    theta = np.array([1.0, 0.0])
    prior = np.array([1.0, 0.0])
    for _ in range(iters):
        pr = 1.0 / (1.0 + np.exp(-(F @ theta)))
        grad = F.T @ (pr - ya) + strength * (theta - prior)
        hess = (F * (pr * (1 - pr))[:, None]).T @ F + strength * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.abs(step).max() < 1e-8:
            break
    return float(theta[0]), float(theta[1])


def apply_calibration(q: npt.ArrayLike, a: float, b: float) -> Array:
    qa = np.clip(np.asarray(q, dtype=np.float64), *P_CLIP)
    return (1.0 / (1.0 + np.exp(-(a * np.log(qa / (1 - qa)) + b)))).astype(np.float32)

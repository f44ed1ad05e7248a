"""Server-side aggregation of MLP-router updates: per parameter group, sample-weighted, robust.

Under non-uniform model coverage a client trains the trunk and only the heads of the models it has
logs for, and sends just those arrays. The server averages each array over the clients that sent
it, weighted by the rows that trained it: the trunk by a client's row count, model m's head by its
rows of model m. A head no client trained this round keeps its global value.

Robustness (all modes): an update with an unknown key, a wrong shape, a non-finite value or a bad
weight is rejected whole, with the reason logged. Then, by ``mode``:

- ``none``: the weighted mean of the updates;
- ``clip``: each update's delta (update - global, over all arrays it sent) is scaled down to at
  most ``clip_factor`` x the median delta norm of the round, then weighted mean;
- ``trimmed``: per array and coordinate, the ``trim_frac`` largest and smallest deltas among its
  contributors are dropped (with 3 or more contributors) and the rest averaged, unweighted.

Usage::

    new, report = aggregate(global_arrays, updates, mode="clip")
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Arrays = dict[str, npt.NDArray[np.float32]]


PER_MODEL_PREFIXES = ("head_w.", "head_b.", "model_z.")


FIXED_KEYS = (
    "model_emb",
    "model_prior",
)  # fixed inputs the server sets once: nobody trains or sends them


def group_of(key: str) -> str:
    """``trunk`` (what every client trains: the trunk, a shared head), ``head:<model index>``
    (a per-model head, bias or learnt model embedding) or ``fixed`` (the embedding-conditioned
    head's fixed model embeddings: never trained, never sent back) for a state-dict key of the
    MLP router."""
    if key.startswith(PER_MODEL_PREFIXES):
        return "head:" + key.split(".", 1)[1]
    if key in FIXED_KEYS:
        return "fixed"
    return "trunk"


@dataclass
class Update:
    """One client's reply: the arrays it trained, and the rows behind each parameter group."""

    client: str
    arrays: Mapping[str, npt.NDArray[np.floating]]
    group_rows: Mapping[str, float]  # "trunk" and "head:<m>" -> rows

    def weight(self, key: str) -> float:
        return float(self.group_rows.get(group_of(key), 0.0))


@dataclass
class AggregationReport:
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    clipped: dict[str, float] = field(default_factory=dict)  # client -> scale applied
    norms: dict[str, float] = field(default_factory=dict)


def rejection_reason(update: Update, global_arrays: Mapping[str, np.ndarray]) -> str | None:
    """Why an update cannot be aggregated, or None when it is well-formed."""
    if not update.arrays:
        return "no arrays"
    for key, arr in update.arrays.items():
        if key not in global_arrays:
            return f"unknown array {key!r}"
        if tuple(arr.shape) != tuple(global_arrays[key].shape):
            return (
                f"array {key!r} has shape {tuple(arr.shape)}, expected {global_arrays[key].shape}"
            )
        if not np.all(np.isfinite(arr)):
            return f"array {key!r} has non-finite values"
        w = update.weight(key)
        if not np.isfinite(w) or w <= 0:
            return f"array {key!r} sent without a positive row count for {group_of(key)}"
    return None


def _trimmed_mean(deltas: npt.NDArray[np.float64], trim_frac: float) -> npt.NDArray[np.float64]:
    n = deltas.shape[0]
    k = int(np.floor(trim_frac * n))
    if n < 3 or k == 0 or n - 2 * k < 1:
        return deltas.mean(axis=0)
    s = np.sort(deltas, axis=0)
    return s[k : n - k].mean(axis=0)


def aggregate(
    global_arrays: Mapping[str, npt.NDArray[np.float32]],
    updates: Sequence[Update],
    *,
    mode: str = "clip",
    clip_factor: float = 2.0,
    trim_frac: float = 0.2,
) -> tuple[Arrays, AggregationReport]:
    """New global arrays from the updates; arrays nobody sent keep their global value."""
    report = AggregationReport()
    good: list[Update] = []
    for u in updates:
        reason = rejection_reason(u, global_arrays)
        if reason is not None:
            log.warning("rejected the update of client %s: %s", u.client, reason)
            report.rejected[u.client] = reason
        else:
            good.append(u)
            report.accepted.append(u.client)
    deltas: dict[str, dict[str, npt.NDArray[np.float64]]] = {}
    for u in good:
        d = {
            k: np.asarray(v, dtype=np.float64) - np.asarray(global_arrays[k], dtype=np.float64)
            for k, v in u.arrays.items()
        }
        deltas[u.client] = d
        report.norms[u.client] = float(np.sqrt(sum(float((x**2).sum()) for x in d.values())))
    if mode == "clip" and len(good) >= 2:
        bound = clip_factor * float(np.median(list(report.norms.values())))
        for c, norm in report.norms.items():
            if norm > bound > 0:
                scale = bound / norm
                deltas[c] = {k: v * scale for k, v in deltas[c].items()}
                report.clipped[c] = scale
                log.info("clipped the update of client %s by %.3g (norm %.3g)", c, scale, norm)
    new: Arrays = {}
    for key, g in global_arrays.items():
        contrib = [(u.weight(key), deltas[u.client][key]) for u in good if key in u.arrays]
        if not contrib:
            new[key] = np.asarray(g, dtype=np.float32).copy()
            continue
        stack = np.stack([d for _, d in contrib])
        if mode == "trimmed":
            step = _trimmed_mean(stack, trim_frac)
        else:
            w = np.array([w for w, _ in contrib], dtype=np.float64)
            step = np.tensordot(w / w.sum(), stack, axes=1)
        new[key] = (np.asarray(g, dtype=np.float64) + step).astype(np.float32)
    return new, report


class ServerOptimizer:
    """The server's step on the shared parameters (group ``trunk``) after aggregation.

    The aggregated mean is read as a pseudo-gradient ``d = mean - global`` (Reddi et al., Adaptive
    Federated Optimization): ``avg`` takes it as is (FedAvg), ``momentum`` keeps a velocity
    ``v = beta v + d`` and steps ``lr v`` (FedAvgM), ``adam`` steps ``lr m / (sqrt(u) + tau)``
    with Adam's first and second moments of ``d`` (FedAdam). Per-model heads always take the
    plain mean: a head missing from a round must not keep moving on stale momentum.

    Usage::

        opt = ServerOptimizer("momentum", lr=1.0, beta=0.9)
        new = opt.step(global_arrays, averaged)
    """

    def __init__(
        self, kind: str = "avg", *, lr: float = 1.0, beta: float = 0.9, tau: float = 1e-3
    ) -> None:
        if kind not in ("avg", "momentum", "adam"):
            raise ValueError(f"unknown server optimiser {kind!r}")
        self.kind, self.lr, self.beta, self.tau = kind, lr, beta, tau
        self.m: dict[str, npt.NDArray[np.float64]] = {}
        self.u: dict[str, npt.NDArray[np.float64]] = {}

    def step(
        self,
        global_arrays: Mapping[str, npt.NDArray[np.float32]],
        averaged: Mapping[str, npt.NDArray[np.float32]],
    ) -> Arrays:
        if self.kind == "avg":
            return {k: np.asarray(v, dtype=np.float32) for k, v in averaged.items()}
        out: Arrays = {}
        for key, new in averaged.items():
            g = np.asarray(global_arrays[key], dtype=np.float64)
            d = np.asarray(new, dtype=np.float64) - g
            if group_of(key) != "trunk":
                out[key] = np.asarray(new, dtype=np.float32)
                continue
            if self.kind == "momentum":
                self.m[key] = self.beta * self.m.get(key, np.zeros_like(d)) + d
                out[key] = (g + self.lr * self.m[key]).astype(np.float32)
            else:
                self.m[key] = self.beta * self.m.get(key, np.zeros_like(d)) + (1 - self.beta) * d
                self.u[key] = 0.99 * self.u.get(key, np.zeros_like(d)) + 0.01 * d**2
                step = self.m[key] / (np.sqrt(self.u[key]) + self.tau)
                out[key] = (g + self.lr * step).astype(np.float32)
        return out

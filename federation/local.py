"""What a client computes on its own logs; the ClientApp wraps these, tests call them directly.

The MLP step is ``training.routers.mlp.local_train``, the same function centralised training uses;
the K-means passes are ``local_centroids`` and ``cell_stats`` from ``training.routers.kmeans``.
Nothing here talks to Flower, so the arithmetic is testable without a federation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch

from training.data.matrix import EvalMatrix
from training.routers.kmeans import cell_stats, local_centroids
from training.routers.mlp import MLPConfig, MLPRouter, MLPRouterNet, local_train, observed_rows

Arrays = dict[str, npt.NDArray[np.float32]]


def net_arrays(net: MLPRouterNet) -> Arrays:
    """The MLP router's parameters as named float32 arrays (its state-dict keys)."""
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}


def mlp_router_from_arrays(
    arrays: Mapping[str, np.ndarray],
    *,
    cfg: MLPConfig,
    models: list[str],
    cost_mu: float,
    cost_sigma: float,
) -> MLPRouter:
    net = MLPRouterNet(cfg, len(models))
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})
    return MLPRouter(net, cfg, models, cost_mu, cost_sigma)


def log_cost_moments(data: EvalMatrix) -> tuple[float, float, float]:
    """(rows, sum of log cost, sum of squared log cost) over the logged cells: enough for the
    server to standardise costs exactly as centralised training does, without seeing a row."""
    c = data.cost_usd[data.observed]
    lc = np.log(np.maximum(c.astype(np.float64), 1e-12))
    return float(len(lc)), float(lc.sum()), float((lc**2).sum())


def pooled_moments(moments: list[tuple[float, float, float]]) -> tuple[float, float]:
    n = sum(m[0] for m in moments)
    if n < 1:
        raise ValueError("no logged costs at any client")
    mu = sum(m[1] for m in moments) / n
    var = max(sum(m[2] for m in moments) / n - mu**2, 0.0)
    sigma = float(np.sqrt(var)) if var > 0 else 1.0
    return float(mu), sigma


def mlp_round(
    router: MLPRouter,
    data: EvalMatrix,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    only_model: int | None = None,
) -> tuple[Arrays, dict[str, float], float]:
    """One local round on the client's logged cells.

    Returns the arrays it trained (the trunk and the heads of the models present; with
    ``only_model``, that model's head alone, the trunk frozen: model expansion), the rows behind
    each group (``trunk``, ``head:<m>``) and the last epoch's loss.
    """
    X, m, a, c = observed_rows(data)
    if only_model is not None:
        keep = m == only_model
        X, m, a, c = X[keep], m[keep], a[keep], c[keep]
    if len(a) == 0:
        return {}, {}, float("nan")
    net = router.net
    frozen = list(net.trunk.parameters()) if only_model is not None else []
    for p in frozen:
        p.requires_grad_(False)
    try:
        stats = local_train(
            net, X, m, a, router.standardise_cost(c),
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=router.cfg.weight_decay,
            grad_clip=router.cfg.grad_clip, cost_weight=router.cfg.cost_weight, seed=seed,
        )  # fmt: skip
    finally:
        for p in frozen:
            p.requires_grad_(True)
    present, counts = np.unique(m, return_counts=True)
    rows: dict[str, float] = {f"head:{j}": float(n) for j, n in zip(present, counts, strict=True)}
    if only_model is None:
        rows["trunk"] = float(len(a))
    arrays = net_arrays(net)
    sent = {
        k: v
        for k, v in arrays.items()
        if (k.startswith(("head_w.", "head_b.")) and f"head:{k.split('.', 1)[1]}" in rows)
        or (not k.startswith(("head_w.", "head_b.")) and "trunk" in rows)
    }
    return sent, rows, float(stats["loss"])


def kmeans_pass1(data: EvalMatrix, k: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Local centroids and their sizes over the client's training queries."""
    return local_centroids(data.embeddings, k, n_init=3, max_iter=30, seed=seed)


def kmeans_pass2(
    data: EvalMatrix, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-(global cluster, model) sums of accuracy and cost and counts over logged cells."""
    q, m = np.nonzero(data.observed)
    return cell_stats(
        data.embeddings[q],
        m.astype(np.int64),
        data.scores[q, m],
        data.cost_usd[q, m],
        centres.astype(np.float32),
        len(data.models),
    )


def poison(arrays: Arrays, global_arrays: Mapping[str, np.ndarray], attack: str) -> Arrays:
    """Fault injection for robustness experiments: scale the update x100, or send NaN."""
    if attack == "scale100":
        return {k: (global_arrays[k] + 100.0 * (v - global_arrays[k])) for k, v in arrays.items()}
    if attack == "nan":
        return {k: np.full_like(v, np.nan) for k, v in arrays.items()}
    return arrays

"""What a client computes on its own logs; the ClientApp wraps these, tests call them directly.

The MLP step is ``training.routers.mlp.local_train``, the same function centralised training uses;
the K-means passes are ``local_centroids`` and ``cell_stats`` from ``training.routers.kmeans``.
Nothing here talks to Flower, so the arithmetic is testable without a federation.

Two MLP head layouts (``head`` in the run config):

- ``per-model``: :class:`~training.routers.mlp.MLPRouterNet`, one (2 x H) head per model: with
  many models each head is trained by the few clients that logged it;
- ``shared``: :class:`SharedHeadNet`, one (2 x H) head shared by every model plus a low-rank
  model-specific part, ``W_m = W + sum_k z_m[k] A_k``, and a per-model bias; ``W`` and ``A`` are
  trained by every client on every row, only the ``model_dim`` numbers ``z_m`` and the bias
  ``b_m`` are per model. :func:`as_plain` turns it into per-model heads exactly (same outputs), so
  the saved router is an ordinary MLP router checkpoint;
- ``embedding``: :class:`EmbeddingHeadNet`, one head conditioned on a *fixed* embedding of each
  model, ``W_m = W_0 + sum_j e_m[j] W_j`` (bias alike): no per-model parameter at all, so every
  client trains every model's scorer on every row. The embedding (:func:`model_embedding`) is
  derived from training data only: the model's accuracy in each of the run's K-means clusters
  (shrunk towards its overall accuracy), its overall accuracy and its log mean cost, standardised
  over the models. The federated run computes it from the same per-(cluster, model) sums the
  federated K-means router aggregates (two query rounds before FedAvg); a centralised or local
  router from its own training rows (:func:`embedding_from_data`). It is not the project's LOCUS
  embedding: LOCUS is trained on MMLU-Pro only and its queries overlap the clients' test splits.

Every random choice takes a seed: :func:`new_net` seeds the initialisation, :func:`mlp_round` the
shuffles and the trunk's dropout (torch's global generator, seeded per round and client), so a
round gives the same update whichever Ray worker runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from federation.aggregate import group_of
from training.data.matrix import EvalMatrix
from training.routers.kmeans import KMeansConfig, KMeansRouter, cell_stats, local_centroids
from training.routers.mlp import MLPConfig, MLPRouter, MLPRouterNet, local_train, observed_rows

Arrays = dict[str, npt.NDArray[np.float32]]


class SharedHeadNet(MLPRouterNet):
    """The MLP router's trunk with one shared, model-embedding-conditioned head (see above)."""

    def __init__(self, cfg: MLPConfig, num_models: int, model_dim: int = 8) -> None:
        super().__init__(cfg, 0)
        h = cfg.hidden
        self.model_dim = model_dim
        self.shared_w = nn.Parameter(torch.randn(2, h) / h**0.5)
        self.basis = nn.Parameter(torch.randn(model_dim, 2, h) / h**0.5 / model_dim**0.5)
        self.model_z = nn.ParameterList([self._new_z() for _ in range(num_models)])
        self.head_b = nn.ParameterList([nn.Parameter(torch.zeros(2)) for _ in range(num_models)])

    def _new_z(self) -> nn.Parameter:
        return nn.Parameter(torch.randn(self.model_dim))

    def add_head(self) -> int:
        self.model_z.append(self._new_z())
        self.head_b.append(nn.Parameter(torch.zeros(2)))
        return len(self.model_z) - 1

    def head_weights(self) -> Tensor:
        """[M, 2, H]: every model's effective head."""
        z = torch.stack(list(self.model_z))  # [M, r]
        return self.shared_w + torch.einsum("mr,rkh->mkh", z, self.basis)

    def head_biases(self) -> Tensor:
        """[M, 2]: every model's bias."""
        return torch.stack(list(self.head_b))

    def forward(self, x: Tensor) -> Tensor:
        hid = self.trunk(x)
        b = torch.stack(list(self.head_b))
        return torch.einsum("bh,mkh->bmk", hid, self.head_weights()) + b

    def rows(self, x: Tensor, model_idx: Tensor) -> Tensor:
        # Per model present, so a model without rows gets no gradient (its z and bias stay put).
        hid = self.trunk(x)
        out = torch.empty(x.shape[0], 2)
        for m in torch.unique(model_idx).tolist():
            sel = model_idx == m
            w = self.shared_w + torch.einsum("r,rkh->kh", self.model_z[m], self.basis)
            out[sel] = hid[sel] @ w.T + self.head_b[m]
        return out


class EmbeddingHeadNet(MLPRouterNet):
    """The MLP router's trunk with one head conditioned on fixed model embeddings (see above).

    Model m's head is ``W_0 + sum_j e_m[j] W_j`` and its bias ``b_0 + sum_j e_m[j] c_j +
    prior_m``: a bilinear score in (trunk(x), e_m) on top of a fixed per-model offset ``prior_m``
    (the logit of the model's logged accuracy and its standardised log mean cost, so the cost
    ordering of the pool holds from the first round and the learnt part fits what varies with the
    query). Every parameter is shared, so a client's rows of any model train the scorer of every
    model; the embeddings ``model_emb`` [M, d] and offsets ``model_prior`` [M, 2] are fixed
    buffers.
    """

    def __init__(
        self, cfg: MLPConfig, model_emb: npt.ArrayLike, model_prior: npt.ArrayLike | None = None
    ) -> None:
        super().__init__(cfg, 0)
        h = cfg.hidden
        emb = torch.as_tensor(np.asarray(model_emb, dtype=np.float32))
        if emb.ndim != 2 or emb.shape[0] < 1:
            raise ValueError(f"model embeddings must be [models, dim], got {tuple(emb.shape)}")
        m, d = emb.shape
        prior = torch.zeros(m, 2)
        if model_prior is not None:
            prior = torch.as_tensor(np.asarray(model_prior, dtype=np.float32))
            if tuple(prior.shape) != (m, 2):
                raise ValueError(f"model priors must be [{m}, 2], got {tuple(prior.shape)}")
        self.register_buffer("model_emb", emb.clone())
        self.register_buffer("model_prior", prior.clone())
        self.cond_w0 = nn.Parameter(torch.randn(2, h) / h**0.5)
        self.cond_w = nn.Parameter(torch.randn(d, 2, h) / h**0.5 / max(d, 1) ** 0.5)
        self.cond_b0 = nn.Parameter(torch.zeros(2))
        self.cond_b = nn.Parameter(torch.zeros(d, 2))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.trunk.parameters(), self.cond_w0, self.cond_w, self.cond_b0, self.cond_b]

    def add_head(self) -> int:
        raise NotImplementedError("the embedding-conditioned head has no per-model head to add")

    def _emb(self) -> Tensor:
        return self.get_buffer("model_emb")

    def head_weights(self) -> Tensor:
        """[M, 2, H]: every model's effective head."""
        return self.cond_w0 + torch.einsum("md,dkh->mkh", self._emb(), self.cond_w)

    def head_biases(self) -> Tensor:
        """[M, 2]: every model's effective bias."""
        return self.cond_b0 + self._emb() @ self.cond_b + self.get_buffer("model_prior")

    def forward(self, x: Tensor) -> Tensor:
        hid = self.trunk(x)  # [B, H]
        return torch.einsum("bh,mkh->bmk", hid, self.head_weights()) + self.head_biases()

    def rows(self, x: Tensor, model_idx: Tensor) -> Tensor:
        hid = self.trunk(x)  # [N, H]
        e = self._emb()[model_idx]  # [N, d]
        per_dim = torch.einsum("nh,dkh->ndk", hid, self.cond_w)  # [N, d, 2]
        return (
            hid @ self.cond_w0.T
            + torch.einsum("nd,ndk->nk", e, per_dim)
            + self.cond_b0
            + (e @ self.cond_b)
            + self.get_buffer("model_prior")[model_idx]
        )


def model_embedding(
    sum_acc: npt.NDArray[np.floating],
    sum_cost: npt.NDArray[np.floating],
    counts: npt.NDArray[np.floating],
    *,
    cost_mu: float = 0.0,
    cost_sigma: float = 1.0,
    prior: float = 2.0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Fixed model embeddings [M, K + 2] and output offsets [M, 2] from per-(cluster, model)
    sums [K, M] of logged rows.

    Embedding features per model: its accuracy in each cluster, ``(sum + prior * overall) /
    (count + prior)`` (the K-means router's shrinkage), its overall accuracy and its log mean
    cost; each feature standardised over the models that have rows. Offsets: the logit of the
    overall accuracy (clipped to [0.02, 0.98]) and the log mean cost standardised by the
    router's ``cost_mu``/``cost_sigma``. A model without a single row gets the zero vector and
    the pool's mean offsets (the mean model); its head is replaced by the never-chosen one when
    the router is saved (``training.routers.mlp.never_chosen``).
    """
    sum_acc, sum_cost, counts = (
        np.asarray(a, dtype=np.float64) for a in (sum_acc, sum_cost, counts)
    )
    n = counts.sum(0)  # [M]
    known = n > 0
    if not known.any():
        raise ValueError("no logged rows for any model: no model embedding")
    safe = np.maximum(n, 1.0)
    acc = np.where(known, sum_acc.sum(0) / safe, 0.0)
    acc = np.where(known, acc, acc[known].mean())
    cell = (sum_acc + prior * acc[None, :]) / (counts + prior)  # [K, M]
    logc = np.log(np.maximum(np.where(known, sum_cost.sum(0) / safe, 1.0), 1e-12))
    logc = np.where(known, logc, logc[known].mean())
    feats = np.concatenate([cell.T, acc[:, None], logc[:, None]], axis=1)  # [M, K + 2]
    mu, sd = feats[known].mean(0), feats[known].std(0)
    sd = np.where(sd > 1e-6, sd, 1.0)
    emb = np.where(known[:, None], (feats - mu) / sd, 0.0)
    a = np.clip(acc, 0.02, 0.98)
    offsets = np.stack([np.log(a / (1 - a)), (logc - cost_mu) / cost_sigma], axis=1)
    return emb.astype(np.float32), offsets.astype(np.float32)


def embedding_from_data(
    data: EvalMatrix, k: int, *, seed: int, cost_moments: tuple[float, float]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """:func:`model_embedding` from one matrix's logged cells (a centralised or local router):
    K-means with ``k`` clusters on its training queries, then the per-(cluster, model) sums."""
    centres, _ = local_centroids(data.embeddings, k, n_init=3, max_iter=30, seed=seed)
    q, m = np.nonzero(data.observed)
    sums = cell_stats(
        data.embeddings[q], m.astype(np.int64), data.scores[q, m], data.cost_usd[q, m],
        centres, len(data.models),
    )  # fmt: skip
    return model_embedding(*sums, cost_mu=cost_moments[0], cost_sigma=cost_moments[1])


@dataclass(frozen=True)
class NetSpec:
    """Which MLP head layout a run trains. Usage: ``NetSpec("shared", 8)``; ``emb_k`` is the
    number of K-means clusters behind the fixed embeddings of ``head="embedding"``."""

    head: str = "per-model"
    model_dim: int = 8
    emb_k: int = 20


def new_net(
    cfg: MLPConfig,
    num_models: int,
    spec: NetSpec,
    *,
    seed: int,
    model_emb: npt.ArrayLike | None = None,
    model_prior: npt.ArrayLike | None = None,
) -> MLPRouterNet:
    """A freshly initialised network, its initialisation drawn from ``seed``; ``head="embedding"``
    needs the fixed ``model_emb`` [num_models, d]."""
    torch.manual_seed(seed)
    if spec.head == "shared":
        return SharedHeadNet(cfg, num_models, spec.model_dim)
    if spec.head == "embedding":
        if model_emb is None or np.shape(model_emb)[0] != num_models:
            raise ValueError(f"head=embedding needs model embeddings for the {num_models} models")
        return EmbeddingHeadNet(cfg, model_emb, model_prior)
    return MLPRouterNet(cfg, num_models)


def as_plain(router: MLPRouter) -> MLPRouter:
    """The same router with per-model heads (identical outputs up to float rounding): what
    checkpoints store."""
    net = router.net
    if not isinstance(net, SharedHeadNet | EmbeddingHeadNet):
        return router
    plain = MLPRouterNet(router.cfg, len(router.models))
    state = {k: v for k, v in net.state_dict().items() if k.startswith("trunk.")}
    with torch.no_grad():
        w, b = net.head_weights(), net.head_biases()
        for m in range(len(router.models)):
            state[f"head_w.{m}"] = w[m].clone()
            state[f"head_b.{m}"] = b[m].clone()
    plain.load_state_dict(state)
    out = MLPRouter(plain, router.cfg, list(router.models), router.cost_mu, router.cost_sigma)
    out.metrics, out.unlogged = dict(router.metrics), list(router.unlogged)
    return out


def train_mlp(
    data: EvalMatrix,
    cfg: MLPConfig,
    spec: NetSpec,
    *,
    cost_moments: tuple[float, float] | None = None,
    after_epoch: Callable[[MLPRouter, int], None] | None = None,
) -> MLPRouter:
    """Centralised (or one client's local) training with the federated run's head layout, one
    epoch at a time as ``train_mlp_router`` does; ``cost_moments`` default to ``data``'s.
    ``after_epoch(router, epochs_done)`` runs after every epoch (validation-based selection:
    the first k epochs of a run are exactly the run with ``epochs=k``)."""
    if cost_moments is None:
        cost_moments = pooled_moments([log_cost_moments(data)])
    emb, offsets = (
        embedding_from_data(data, spec.emb_k, seed=cfg.seed, cost_moments=cost_moments)
        if spec.head == "embedding"
        else (None, None)
    )
    net = new_net(cfg, len(data.models), spec, seed=cfg.seed, model_emb=emb, model_prior=offsets)
    router = MLPRouter(net, cfg, list(data.models), *cost_moments)
    X, m, a, c = observed_rows(data)
    cz = router.standardise_cost(c)
    for epoch in range(cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout
        local_train(
            router.net, X, m, a, cz,
            epochs=1, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip, cost_weight=cfg.cost_weight, seed=cfg.seed * 1000 + epoch,
        )  # fmt: skip
        if after_epoch is not None:
            after_epoch(router, epoch + 1)
    return router


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
    spec: NetSpec = NetSpec(),
) -> MLPRouter:
    emb = arrays.get("model_emb") if spec.head == "embedding" else None
    net = new_net(  # every array is overwritten below
        cfg, len(models), spec, seed=0, model_emb=emb, model_prior=arrays.get("model_prior")
    )
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
    prox_mu: float = 0.0,
    optimizer: str = "adamw",
) -> tuple[Arrays, dict[str, float], float]:
    """One local round on the client's logged cells.

    Returns the arrays it trained (the shared part and the heads of the models present; with
    ``only_model``, that model's head alone, everything shared frozen: model expansion), the
    rows behind each group (``trunk``, ``head:<m>``) and the last epoch's loss. ``seed`` fixes
    the shuffles and the dropout masks.
    """
    X, m, a, c = observed_rows(data)
    if only_model is not None:
        keep = m == only_model
        X, m, a, c = X[keep], m[keep], a[keep], c[keep]
    if len(a) == 0:
        return {}, {}, float("nan")
    net = router.net
    shared = [p for k, p in net.named_parameters() if group_of(k) == "trunk"]
    frozen = shared if only_model is not None else []
    for p in frozen:
        p.requires_grad_(False)
    try:
        torch.manual_seed(seed)  # the dropout masks: same update whichever worker runs it
        stats = local_train(
            net, X, m, a, router.standardise_cost(c),
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=router.cfg.weight_decay,
            grad_clip=router.cfg.grad_clip, cost_weight=router.cfg.cost_weight, seed=seed,
            prox_mu=prox_mu if only_model is None else 0.0, optimizer=optimizer,
        )  # fmt: skip
    finally:
        for p in frozen:
            p.requires_grad_(True)
    present, counts = np.unique(m, return_counts=True)
    rows: dict[str, float] = {f"head:{j}": float(n) for j, n in zip(present, counts, strict=True)}
    if only_model is None:
        rows["trunk"] = float(len(a))
    arrays = net_arrays(net)
    sent = {k: v for k, v in arrays.items() if group_of(k) in rows}
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


def kmeans_from_stats(
    cfg: KMeansConfig,
    models: list[str],
    centres: np.ndarray,
    sum_acc: np.ndarray,
    sum_cost: np.ndarray,
    counts: np.ndarray,
    *,
    unknown_cost: float = 1e6,
) -> KMeansRouter:
    """``KMeansRouter.from_stats`` where some model may have no logged row at all (strong
    per-client model skew: nobody logged it): such a model gets accuracy 0 and a prohibitive
    cost in every cell, so it is never chosen, as a client-local router treats a model it never
    logged."""
    known = counts.sum(0) > 0
    if known.all():
        return KMeansRouter.from_stats(cfg, models, centres, sum_acc, sum_cost, counts)
    if not known.any():
        raise ValueError("no evaluations at all for any model")
    sub = KMeansRouter.from_stats(
        cfg, [m for m, k in zip(models, known, strict=True) if k], centres,
        sum_acc[:, known], sum_cost[:, known], counts[:, known],
    )  # fmt: skip
    acc = np.zeros(counts.shape, dtype=np.float32)
    cost = np.full(counts.shape, unknown_cost, dtype=np.float32)
    acc[:, known], cost[:, known] = sub.acc, sub.cost
    return KMeansRouter(cfg, list(models), sub.centres, acc, cost, counts.astype(np.float32))

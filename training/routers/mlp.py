"""MLP router: a shared trunk and one head per model predicting accuracy and cost.

The trunk is two Linear-LayerNorm-GELU-Dropout layers; each model has its own head (a separate
parameter, so a model absent from a client's data keeps its head bitwise unchanged: the optimiser
skips parameters without gradients). The accuracy output is a logit trained with BCE; the cost
output predicts the standardised log cost (mean/std of log USD stored in the checkpoint), trained
with MSE. Training sees only observed (query, model) cells, one row each, so the same
``local_train`` serves the centralised router here and a federated client that logged one model
per query (Askin et al., arXiv 2601.22318).

Usage::

    router = train_mlp_router(matrix, MLPConfig())
    out = router.predict(X)         # RouterOutput(p_correct [B, M], cost_usd [B, M])
    router = never_chosen(router, ["a-model-nobody-logged"])

A model without a single training row has a head that never trained: its scores would be the
random initialisation's. :func:`never_chosen` replaces such heads by the documented prior of a
model with no evidence, "never route to it" (accuracy logit ``NEVER_CHOSEN_LOGIT``, so
p_correct ~ 1e-13, and cost ``NEVER_CHOSEN_COST_USD``), the same rule as a K-means router cell
table for a model nobody logged and a client-local router for a model its client never logged;
the checkpoint lists them (``router.unlogged``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from tqdm import tqdm

from training.checkpoint import save_checkpoint
from training.data.matrix import EvalMatrix
from training.minilm import EMBED_DIM
from training.routers.base import RouterOutput

Array = npt.NDArray[np.float32]

NEVER_CHOSEN_LOGIT = -30.0  # sigmoid(-30) ~ 9e-14: no evidence the model ever answers right
NEVER_CHOSEN_COST_USD = 1e6  # prohibitive at every lambda (federation.routers.UNKNOWN_COST)


@dataclass
class MLPConfig:
    """MLP router knobs. Defaults follow the federated-routing paper (arXiv 2601.22318)."""

    input_dim: int = field(default=EMBED_DIM, metadata={"help": "query-embedding size"})
    hidden: int = field(default=256, metadata={"help": "trunk width (paper: 512)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the trunk"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=3e-4, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=128, metadata={"help": "rows per step"})
    epochs: int = field(default=8, metadata={"help": "passes over the training rows"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clip"})
    cost_weight: float = field(default=0.5, metadata={"help": "weight of the cost MSE in the loss"})
    seed: int = field(default=0, metadata={"help": "seed for init and shuffling"})

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.batch_size < 1 or self.epochs < 0:
            raise ValueError("hidden, batch_size must be >= 1 and epochs >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


class MLPRouterNet(nn.Module):
    def __init__(self, cfg: MLPConfig, num_models: int) -> None:
        super().__init__()
        h = cfg.hidden
        self.trunk = nn.Sequential(
            nn.Linear(cfg.input_dim, h),
            nn.LayerNorm(h),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(h, h),
            nn.LayerNorm(h),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
        )
        self.head_w = nn.ParameterList(
            [nn.Parameter(torch.randn(2, h) / h**0.5) for _ in range(num_models)]
        )
        self.head_b = nn.ParameterList([nn.Parameter(torch.zeros(2)) for _ in range(num_models)])

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every model's score goes through (FedProx's proximal term): here the
        trunk; a subclass whose head is shared by every model adds it."""
        return list(self.trunk.parameters())

    def add_head(self) -> int:
        """Append a head for a new model; returns its index."""
        h = self.head_w[0].shape[1]
        self.head_w.append(nn.Parameter(torch.randn(2, h) / h**0.5))
        self.head_b.append(nn.Parameter(torch.zeros(2)))
        return len(self.head_w) - 1

    def forward(self, x: Tensor) -> Tensor:
        """x [B, D] -> [B, M, 2] (accuracy logit, standardised log cost)."""
        hid = self.trunk(x)  # [B, H]
        w = torch.stack(list(self.head_w))  # [M, 2, H]
        b = torch.stack(list(self.head_b))  # [M, 2]
        return torch.einsum("bh,mkh->bmk", hid, w) + b

    def rows(self, x: Tensor, model_idx: Tensor) -> Tensor:
        """Outputs [N, 2] for rows (x_i, m_i), touching only the heads of the models present."""
        hid = self.trunk(x)  # [N, H]
        out = torch.empty(x.shape[0], 2)
        for m in torch.unique(model_idx).tolist():
            sel = model_idx == m
            out[sel] = hid[sel] @ self.head_w[m].T + self.head_b[m]
        return out


OPTIMIZERS = ("adamw", "sgd")


def local_train(
    net: MLPRouterNet,
    X: Array,
    model_idx: npt.NDArray[np.int64],
    acc: Array,
    log_cost_z: Array,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    grad_clip: float,
    cost_weight: float,
    seed: int,
    progress: bool = False,
    prox_mu: float = 0.0,
    optimizer: str = "adamw",
) -> dict[str, float]:
    """Train ``net`` in place on rows (x, model, accuracy, standardised log cost).

    The trunk and the heads of the models present in ``model_idx`` change; every other head stays
    bitwise identical. ``prox_mu > 0`` adds FedProx's proximal term ``mu/2 ||w - w_start||^2`` on
    ``net.shared_parameters()`` (the trunk, and a head every model shares): a federated client
    stays near the global model. ``optimizer`` is ``adamw`` (a fresh AdamW) or ``sgd`` (plain
    SGD, no momentum: stateless, so a federated client that takes only a few steps a round
    makes a step proportional to its gradient, where a fresh Adam's first steps are close to
    ``lr * sign(gradient)`` whatever the gradient's size). Returns the mean loss of the last
    epoch and the number of rows.
    """
    n = len(acc)
    if n == 0:
        return {"loss": float("nan"), "rows": 0.0}
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.as_tensor(X, dtype=torch.float32)
    m_t = torch.as_tensor(model_idx, dtype=torch.long)
    a_t = torch.as_tensor(acc, dtype=torch.float32)
    c_t = torch.as_tensor(log_cost_z, dtype=torch.float32)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    opt: torch.optim.Optimizer = (
        torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        if optimizer == "adamw"
        else torch.optim.SGD(net.parameters(), lr=lr, weight_decay=weight_decay)
    )
    bce = nn.BCEWithLogitsLoss()
    anchor = [(p, p.detach().clone()) for p in net.shared_parameters()] if prox_mu > 0 else []
    net.train()
    last = float("nan")
    for _ in tqdm(range(epochs), desc="mlp router", disable=not progress, leave=False):
        perm = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            out = net.rows(x_t[idx], m_t[idx])
            loss = bce(out[:, 0], a_t[idx]) + cost_weight * ((out[:, 1] - c_t[idx]) ** 2).mean()
            if anchor:
                loss = loss + 0.5 * prox_mu * sum(((p - p0) ** 2).sum() for p, p0 in anchor)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        last = total / seen
    net.eval()
    return {"loss": last, "rows": float(n)}


def observed_rows(matrix: EvalMatrix) -> tuple[Array, npt.NDArray[np.int64], Array, Array]:
    """The observed cells of a matrix as rows: (X [N, D], model index [N], acc [N], cost [N])."""
    q, m = np.nonzero(~np.isnan(matrix.scores))
    return (
        matrix.embeddings[q],
        m.astype(np.int64),
        matrix.scores[q, m].astype(np.float32),
        matrix.cost_usd[q, m].astype(np.float32),
    )


class MLPRouter:
    """A trained MLP router. Usage: ``MLPRouter.load(path).predict(X)``."""

    name = "mlp"

    def __init__(
        self,
        net: MLPRouterNet,
        cfg: MLPConfig,
        models: list[str],
        cost_mu: float,
        cost_sigma: float,
    ) -> None:
        self.net = net.eval()
        self.cfg = cfg
        self.models = list(models)
        self.cost_mu = cost_mu
        self.cost_sigma = cost_sigma
        self.metrics: dict[str, float] = {}
        self.unlogged: list[str] = []  # models given the never-chosen head (:func:`never_chosen`)

    def standardise_cost(self, cost: Array) -> Array:
        return ((np.log(np.maximum(cost, 1e-12)) - self.cost_mu) / self.cost_sigma).astype(
            np.float32
        )

    @torch.inference_mode()
    def predict(self, X: Array) -> RouterOutput:
        out = self.net(torch.as_tensor(np.asarray(X, dtype=np.float32)))  # [B, M, 2]
        p = torch.sigmoid(out[..., 0]).numpy()
        cost = np.exp(out[..., 1].numpy() * self.cost_sigma + self.cost_mu)
        return RouterOutput(p.astype(np.float32), cost.astype(np.float32))

    def save(self, path: str | Path) -> Path:
        state = {
            "net": self.net.state_dict(),
            "models": self.models,
            "cost_mu": self.cost_mu,
            "cost_sigma": self.cost_sigma,
            "unlogged": list(self.unlogged),
        }
        return save_checkpoint(
            path, kind="mlp", config=asdict(self.cfg), state_dict=state, metrics=self.metrics
        )

    @classmethod
    def from_checkpoint_dict(cls, ckpt: dict[str, Any]) -> MLPRouter:
        cfg = MLPConfig(**ckpt["config"])
        state = ckpt["state_dict"]
        net = MLPRouterNet(cfg, len(state["models"]))
        net.load_state_dict(state["net"])
        router = cls(
            net, cfg, list(state["models"]), float(state["cost_mu"]), float(state["cost_sigma"])
        )
        router.metrics = dict(ckpt.get("metrics", {}))
        router.unlogged = [str(m) for m in state.get("unlogged", [])]
        return router


def never_chosen(router: MLPRouter, models: Sequence[str]) -> MLPRouter:
    """A copy of ``router`` whose heads for ``models`` (no training row anywhere, so their heads
    never trained) output the never-chosen prior: accuracy logit ``NEVER_CHOSEN_LOGIT`` and cost
    ``NEVER_CHOSEN_COST_USD`` for every query, so ``argmax p - lambda cost`` never picks them.
    Needs per-model heads (:class:`MLPRouterNet`); the other heads and the trunk are unchanged."""
    unknown = [m for m in models if m not in router.models]
    if unknown:
        raise KeyError(f"never_chosen: unknown model(s) {unknown}; the router has {router.models}")
    if not models:
        return router
    if type(router.net) is not MLPRouterNet:
        raise TypeError("never_chosen needs per-model heads (an MLPRouterNet)")
    net = copy.deepcopy(router.net)
    cost_z = (float(np.log(NEVER_CHOSEN_COST_USD)) - router.cost_mu) / router.cost_sigma
    with torch.no_grad():
        for name in models:
            j = router.models.index(name)
            net.head_w[j].zero_()
            net.head_b[j].copy_(torch.tensor([NEVER_CHOSEN_LOGIT, cost_z]))
    out = MLPRouter(net, router.cfg, router.models, router.cost_mu, router.cost_sigma)
    out.metrics = dict(router.metrics)
    out.unlogged = sorted({*router.unlogged, *models}, key=router.models.index)
    return out


def new_mlp_router(cfg: MLPConfig, models: list[str], costs: Array) -> MLPRouter:
    """An untrained router whose cost standardisation comes from the given observed costs."""
    torch.manual_seed(cfg.seed)
    logc = np.log(np.maximum(costs[~np.isnan(costs)], 1e-12))
    sigma = float(logc.std()) if len(logc) > 1 and logc.std() > 0 else 1.0
    return MLPRouter(MLPRouterNet(cfg, len(models)), cfg, models, float(logc.mean()), sigma)


def train_mlp_router(
    matrix: EvalMatrix,
    cfg: MLPConfig,
    *,
    val: EvalMatrix | None = None,
    progress: bool = True,
) -> MLPRouter:
    """Centralised training on every observed cell; with ``val``, keep the best epoch by val BCE."""
    router = new_mlp_router(cfg, matrix.models, matrix.cost_usd)
    X, m, a, c = observed_rows(matrix)
    cz = router.standardise_cost(c)
    best: tuple[float, dict[str, Any]] | None = None
    for epoch in tqdm(range(cfg.epochs), desc="mlp router", disable=not progress):
        stats = local_train(
            router.net, X, m, a, cz,
            epochs=1, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip, cost_weight=cfg.cost_weight, seed=cfg.seed * 1000 + epoch,
        )  # fmt: skip
        router.metrics["train_loss"] = stats["loss"]
        if val is not None:
            from training.evaluation.metrics import log_loss

            v = log_loss(router.predict(val.embeddings).p_correct, val.scores)
            if best is None or v < best[0]:
                best = (v, copy.deepcopy(router.net.state_dict()))
    if best is not None:
        router.net.load_state_dict(best[1])
        router.metrics["val_log_loss"] = best[0]
    router.net.eval()
    return router

"""Ravan on sklearn's digits: an MLP pre-trained on digits 0-4, adapted federatedly to all ten.

Data (seeded split of the 1,797 images): 30% pre-training (its digits 0-4 only), 40% federated
training (Dirichlet label skew over ``clients``), 15% validation (tuning), 15% test.
The client step is :func:`local_adapt`: rebuild the pre-trained MLP (deterministic from the seed,
cached per process), attach the method's adapters with the shared seed, load the global arrays,
run ``local_steps`` full-batch Adam steps on the client's data, reply with the upload and the
client's sample count.

Usage::

    exp = digits_experiment("ravan-a0.1", seed=0, method="ravan", alpha=0.1, lr=3e-3, cfg=cfg)
    (res,) = InProcessBackend().run([exp])
    acc = digits_accuracy(exp.config, res.final, split="test")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from training.research.federated import Arrays, FedExperiment
from training.research.ravan.config import RavanConfig

LOCAL_STEP = "training.research.ravan.digits:local_adapt"
TARGETS = ("fc1", "fc2", "fc3")
PRETRAIN_CLASSES = 5


def _mlp() -> Any:
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = (
                nn.Linear(64, 128),
                nn.Linear(128, 128),
                nn.Linear(128, 10),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x))  # (B, 128)
            h = torch.relu(self.fc2(h))  # (B, 128)
            out: torch.Tensor = self.fc3(h)  # (B, 10)
            return out

    return MLP()


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


@lru_cache(maxsize=16)
def splits(seed: int) -> dict[str, np.ndarray]:
    """Row indices of each split (stratified by digit)."""
    _, y = _digits()
    rng = np.random.default_rng([seed, 50])
    parts: dict[str, list[int]] = {"pretrain": [], "train": [], "val": [], "test": []}
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(y == c))
        n = len(rows)
        cuts = np.cumsum([round(0.30 * n), round(0.40 * n), round(0.15 * n)])
        for name, part in zip(parts, np.split(rows, cuts), strict=True):
            parts[name] += part.tolist()
    return {k: np.sort(np.asarray(v)) for k, v in parts.items()}


def dirichlet_split(
    labels: np.ndarray,
    clients: int,
    alpha: float | None,
    rng: np.random.Generator,
    min_size: int = 2,
) -> list[np.ndarray]:
    """Positions 0..len(labels)-1 split over clients: uniform (``alpha=None``) or per-class
    Dirichlet(alpha) proportions, redrawn until every client holds ``min_size`` samples."""
    n = len(labels)
    if alpha is None:
        return [np.sort(p) for p in np.array_split(rng.permutation(n), clients)]
    for _ in range(1000):
        owner = np.empty(n, dtype=np.int64)
        for c in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(rows)).astype(int)
            for k, part in enumerate(np.split(rows, cuts)):
                owner[part] = k
        parts = [np.flatnonzero(owner == k) for k in range(clients)]
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise RuntimeError(f"no Dirichlet({alpha}) split gives every client {min_size} samples")


@lru_cache(maxsize=64)
def client_rows(seed: int, clients: int, alpha: float | None) -> tuple[np.ndarray, ...]:
    _, y = _digits()
    train = splits(seed)["train"]
    rng = np.random.default_rng([seed, 51, clients, int(1e6 * (alpha or 0))])
    return tuple(train[p] for p in dirichlet_split(y[train], clients, alpha, rng))


@lru_cache(maxsize=8)
def pretrained_state(seed: int, epochs: int) -> dict[str, np.ndarray]:
    """The base MLP trained (full-batch Adam, lr 1e-2) on the pre-training split's digits 0-4."""
    import torch

    x, y = _digits()
    rows = splits(seed)["pretrain"]
    rows = rows[y[rows] < PRETRAIN_CLASSES]
    torch.manual_seed(seed)
    net = _mlp()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xb, yb = torch.from_numpy(x[rows]), torch.from_numpy(y[rows])
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def spec_of(config: Mapping[str, Any]) -> Any:
    from training.research.ravan.adapters import AdapterSpec, target_dims

    dims = target_dims(_mlp(), TARGETS)
    return AdapterSpec.matched(
        str(config["method"]), dims, lora_rank=int(config["lora_rank"]), heads=int(config["heads"])
    )


@lru_cache(maxsize=4)
def _built(seed: int, pretrain_epochs: int, method: str, lora_rank: int, heads: int) -> Any:
    """One adapted model per process and setting: every use loads all of its trainable
    parameters first (:func:`adapted_model`), and the frozen rest never changes."""
    import torch

    from training.research.ravan.adapters import attach, initial_uploads

    net = _mlp()
    state = pretrained_state(seed, pretrain_epochs)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    spec = spec_of({"method": method, "lora_rank": lora_rank, "heads": heads})
    model = attach(net, spec, seed=seed + 7)
    return model, spec, initial_uploads(model, spec)


def adapted_model(config: Mapping[str, Any], arrays: Arrays | None = None) -> tuple[Any, Any]:
    """The pre-trained MLP with the method's adapters (shared seed), ``arrays`` loaded (default:
    the initial adapters, ΔW = 0)."""
    import torch

    from training.research.ravan.adapters import load

    torch.set_num_threads(1)
    model, spec, init = _built(
        int(config["seed"]), int(config["pretrain_epochs"]), str(config["method"]),
        int(config["lora_rank"]), int(config["heads"]),
    )  # fmt: skip
    load(model, spec, init if arrays is None else arrays)
    return model, spec


def local_adapt(
    config: Mapping[str, Any], clients: Sequence[int], arrays: Arrays, round_cfg: Mapping[str, Any]
) -> list[tuple[Arrays, float]]:
    import torch

    from training.research.ravan.adapters import uploads

    del round_cfg
    x, y = _digits()
    alpha = None if config["alpha"] is None else float(config["alpha"])
    parts = client_rows(int(config["seed"]), int(config["clients"]), alpha)
    out = []
    for c in clients:
        rows = parts[c]
        model, spec = adapted_model(config, arrays)
        torch.manual_seed(int(config["seed"]) * 1000 + c)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=float(config["lr"]))
        xb, yb = torch.from_numpy(x[rows]), torch.from_numpy(y[rows])
        for _ in range(int(config["local_steps"])):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        out.append((uploads(model, spec), float(len(rows))))
    return out


def experiment_config(
    cfg: RavanConfig, *, seed: int, method: str, alpha: float | None, lr: float
) -> dict[str, Any]:
    return {
        "seed": seed, "method": method, "alpha": alpha, "lr": lr, "clients": cfg.clients,
        "local_steps": cfg.local_steps, "lora_rank": cfg.lora_rank, "heads": cfg.heads,
        "pretrain_epochs": cfg.pretrain_epochs,
    }  # fmt: skip


def digits_experiment(
    name: str,
    cfg: RavanConfig,
    *,
    seed: int,
    method: str,
    alpha: float | None,
    lr: float,
    keep_history: bool = False,
) -> FedExperiment:
    from training.research.ravan.adapters import initial_uploads

    config = experiment_config(cfg, seed=seed, method=method, alpha=alpha, lr=lr)
    model, spec = adapted_model(config)
    return FedExperiment(
        name, LOCAL_STEP, config, cfg.clients, initial_uploads(model, spec),
        [{"round": r} for r in range(cfg.rounds)], keep_history=keep_history,
    )  # fmt: skip


def digits_accuracy(config: Mapping[str, Any], arrays: Arrays, *, split: str) -> float:
    """Accuracy of the global adapted model on ``split`` (val or test), all ten digits."""
    import torch

    x, y = _digits()
    rows = splits(int(config["seed"]))[split]
    model, _ = adapted_model(config, arrays)
    with torch.no_grad():
        pred = model(torch.from_numpy(x[rows])).argmax(-1).numpy()
    return float((pred == y[rows]).mean())


def base_accuracy(seed: int, epochs: int, *, split: str) -> float:
    """The pre-trained MLP before adaptation (it never saw digits 5-9)."""
    import torch

    x, y = _digits()
    rows = splits(seed)[split]
    net = _mlp()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in pretrained_state(seed, epochs).items()})
    with torch.no_grad():
        pred = net(torch.from_numpy(x[rows])).argmax(-1).numpy()
    return float((pred == y[rows]).mean())

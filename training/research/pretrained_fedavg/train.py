"""FedAvg on the signal-noise patch model: client data, the local step, the initialisations.

A client's data is rebuilt from the experiment's JSON config (seed, data sizes, IID or label skew),
so a Flower ClientApp and the in-process runner compute the same thing. :func:`local_gd` is the
client step: ``local_steps`` full-batch GD steps from the global weights; the server averages the
weights by sample count.

Usage::

    exp = fedavg_experiment("random-noniid", cfg, seed=0, iid=False, init=w0)
    (res,) = InProcessBackend().run([exp])
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import lru_cache
from typing import Any

import numpy as np

from training.research.federated import Arrays, FedExperiment
from training.research.pretrained_fedavg.config import PretrainedFedAvgConfig
from training.research.pretrained_fedavg.model import (
    SIGN,
    Data,
    gd,
    make_data,
    make_signal,
)

LOCAL_STEP = "training.research.pretrained_fedavg.train:local_gd"


def signal(cfg: Mapping[str, Any]) -> np.ndarray:
    return make_signal(
        np.random.default_rng([int(cfg["seed"]), 0]), int(cfg["dim"]), float(cfg["mu_norm"])
    )


def client_labels(cfg: Mapping[str, Any], client: int, iid: bool) -> np.ndarray:
    """IID: each label +-1 with probability 1/2. Label skew: a ``skew`` share of the client's
    samples in its majority class (+1 for the first half of the clients, -1 for the rest)."""
    n = int(cfg["per_client"])
    rng = np.random.default_rng([int(cfg["seed"]), 1, client])
    if iid:
        return rng.choice([-1.0, 1.0], size=n)
    major = 1.0 if client < int(cfg["clients"]) // 2 else -1.0
    k = round(float(cfg["skew"]) * n)
    return rng.permutation(np.concatenate([np.full(k, major), np.full(n - k, -major)]))


def client_data(cfg: Mapping[str, Any], client: int) -> Data:
    return _client_data_cached(json.dumps(dict(cfg), sort_keys=True), client)


@lru_cache(maxsize=256)
def _client_data_cached(key: str, client: int) -> Data:
    cfg = json.loads(key)
    y = client_labels(cfg, client, bool(cfg["iid"]))
    rng = np.random.default_rng([int(cfg["seed"]), 2, client])
    return make_data(rng, y, signal(cfg), float(cfg["sigma_p"]))


def test_data(cfg: Mapping[str, Any]) -> Data:
    rng = np.random.default_rng([int(cfg["seed"]), 3])
    y = rng.choice([-1.0, 1.0], size=int(cfg["test_size"]))
    return make_data(rng, y, signal(cfg), float(cfg["sigma_p"]))


def local_gd(
    config: Mapping[str, Any], clients: Sequence[int], arrays: Arrays, round_cfg: Mapping[str, Any]
) -> list[tuple[Arrays, float]]:
    """``local_steps`` full-batch GD steps on each client's own data, from the global weights."""
    del round_cfg  # every round is the same
    out = []
    for c in clients:
        data = client_data(config, c)
        w = gd(arrays["w"], data, steps=int(config["local_steps"]), lr=float(config["lr"]))
        out.append(({"w": w}, float(len(data.y))))
    return out


def experiment_config(cfg: PretrainedFedAvgConfig, *, seed: int, iid: bool) -> dict[str, Any]:
    keys = ("dim", "sigma_p", "mu_norm", "clients", "per_client", "skew", "lr", "local_steps",
            "test_size")  # fmt: skip
    full = asdict(cfg)
    return {**{k: full[k] for k in keys}, "seed": seed, "iid": iid}


def fedavg_experiment(
    name: str, cfg: PretrainedFedAvgConfig, *, seed: int, iid: bool, init: np.ndarray
) -> FedExperiment:
    return FedExperiment(
        name, LOCAL_STEP, experiment_config(cfg, seed=seed, iid=iid), cfg.clients,
        {"w": init.copy()}, [{"round": r} for r in range(cfg.rounds)], keep_history=False,
    )  # fmt: skip


# ---- initialisations


def random_init(cfg: PretrainedFedAvgConfig, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 5])
    return cfg.sigma0 * rng.standard_normal((2, cfg.filters, cfg.dim))


def pretrained_init(cfg: PretrainedFedAvgConfig, seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """Centralised GD from the random init on a source task whose signal mu_src has cosine
    ``source_cosine`` with the target mu (same norm); returns the weights and source figures."""
    mu = signal(experiment_config(cfg, seed=seed, iid=True))
    rng = np.random.default_rng([seed, 4])
    u = mu / np.linalg.norm(mu)
    perp = rng.standard_normal(cfg.dim)
    perp -= (perp @ u) * u
    perp /= np.linalg.norm(perp)
    c = cfg.source_cosine
    mu_src = np.linalg.norm(mu) * (c * u + np.sqrt(1 - c * c) * perp)
    y = rng.choice([-1.0, 1.0], size=cfg.pretrain_samples)
    data = make_data(rng, y, mu_src, cfg.sigma_p)
    w = gd(random_init(cfg, seed), data, steps=cfg.pretrain_steps, lr=cfg.lr)
    return w, {"source_cosine": c}


def controlled_init(cfg: PretrainedFedAvgConfig, seed: int, aligned: float) -> np.ndarray:
    """The random init plus +-align_scale j mu/||mu||: + on the first round(aligned m) filters of
    each class (aligned), - on the rest (misaligned)."""
    mu = signal(experiment_config(cfg, seed=seed, iid=True))
    u = mu / np.linalg.norm(mu)
    k = round(aligned * cfg.filters)
    sign = np.where(np.arange(cfg.filters) < k, 1.0, -1.0)  # (m,)
    push = cfg.align_scale * SIGN[:, None, None] * sign[None, :, None] * u[None, None, :]
    return random_init(cfg, seed) + push

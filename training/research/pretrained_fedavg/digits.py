"""The digits check: a small CNN on sklearn's bundled 8x8 digits, 3 vs 8, FedAvg with label skew
from a random initialisation and from one pre-trained on the other eight digits.

The client step is :func:`local_digits` (full-batch SGD steps from the global weights); data are
rebuilt from the experiment's config, as in :mod:`.train`.

Usage::

    w0 = digits_init(seed=0, pretrained=True, epochs=30)
    exp = digits_experiment("pre-noniid", seed=0, iid=False, init=w0, rounds=40)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from training.research.federated import Arrays, FedExperiment

LOCAL_STEP = "training.research.pretrained_fedavg.digits:local_digits"
TARGET = (3, 8)
CLIENTS, SKEW, LOCAL_STEPS, LR = 10, 0.9, 5, 0.1


def _net(classes: int) -> Any:
    import torch
    from torch import nn

    torch.set_num_threads(1)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),  # (B, 8, 8, 8)
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 8, 4, 4)
        nn.Flatten(),
        nn.Linear(128, classes),
    )


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)


@lru_cache(maxsize=8)
def target_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """3 vs 8 (labels 0/1), 70/30 train/test split."""
    x, t = _digits()
    keep = np.isin(t, TARGET)
    x, y = x[keep], (t[keep] == TARGET[1]).astype(np.int64)
    order = np.random.default_rng([seed, 20]).permutation(len(y))
    cut = int(0.7 * len(y))
    tr, te = order[:cut], order[cut:]
    return x[tr], y[tr], x[te], y[te]


@lru_cache(maxsize=64)
def client_rows(seed: int, iid: bool) -> tuple[tuple[int, ...], ...]:
    """Each client's training rows: IID shuffled shares, or label skew (``SKEW`` of a client's
    rows from its majority class, half the clients per class)."""
    _, y, _, _ = target_split(seed)
    rng = np.random.default_rng([seed, 21, int(iid)])
    if iid:
        return tuple(
            tuple(int(i) for i in part) for part in np.array_split(rng.permutation(len(y)), CLIENTS)
        )
    by = [list(rng.permutation(np.flatnonzero(y == c))) for c in (0, 1)]
    per = len(y) // CLIENTS
    out = []
    for c in range(CLIENTS):
        major = 0 if c < CLIENTS // 2 else 1
        k = min(round(SKEW * per), len(by[major]))
        rows = [by[major].pop() for _ in range(k)]
        rows += [by[1 - major].pop() for _ in range(min(per - k, len(by[1 - major])))]
        out.append(tuple(int(i) for i in rows))
    return tuple(out)


def _to_arrays(net: Any) -> Arrays:
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def _from_arrays(arrays: Arrays, classes: int) -> Any:
    import torch

    net = _net(classes)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return net


def local_digits(
    config: Mapping[str, Any], clients: Sequence[int], arrays: Arrays, round_cfg: Mapping[str, Any]
) -> list[tuple[Arrays, float]]:
    import torch

    del round_cfg
    seed, iid = int(config["seed"]), bool(config["iid"])
    x, y, _, _ = target_split(seed)
    parts = client_rows(seed, iid)
    out = []
    for c in clients:
        rows = np.asarray(parts[c])
        net = _from_arrays(arrays, 2)
        opt = torch.optim.SGD(net.parameters(), lr=LR)
        xb, yb = torch.from_numpy(x[rows]), torch.from_numpy(y[rows])
        for _ in range(LOCAL_STEPS):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
        out.append((_to_arrays(net), float(len(rows))))
    return out


def digits_init(*, seed: int, pretrained: bool, epochs: int) -> Arrays:
    """Random init, or conv layer pre-trained (full-batch Adam) on the eight other digits with a
    fresh 2-way head."""
    import torch

    torch.manual_seed(seed)
    net = _net(2)
    if pretrained:
        x, t = _digits()
        keep = ~np.isin(t, TARGET)
        classes = sorted(set(t[keep].tolist()))
        yy = np.searchsorted(classes, t[keep])
        src = _net(len(classes))
        opt = torch.optim.Adam(src.parameters(), lr=0.01)
        xb, yb = torch.from_numpy(x[keep]), torch.from_numpy(yy)
        for _ in range(epochs):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(src(xb), yb).backward()
            opt.step()
        net[0].load_state_dict(src[0].state_dict())
    return _to_arrays(net)


def digits_error(arrays: Arrays, seed: int) -> float:
    import torch

    _, _, x, y = target_split(seed)
    with torch.no_grad():
        pred = _from_arrays(arrays, 2)(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred != y).mean())


def digits_experiment(
    name: str, *, seed: int, iid: bool, init: Arrays, rounds: int
) -> FedExperiment:
    return FedExperiment(
        name, LOCAL_STEP, {"seed": seed, "iid": iid}, CLIENTS, init,
        [{"round": r} for r in range(rounds)], keep_history=False,
    )  # fmt: skip

"""The two-layer ReLU CNN of the signal-noise patch model, in numpy (NOTES.md (j)).

Weights W have shape (2, m, d): W[0] are the filters of F_+1, W[1] those of F_-1.

Usage::

    data = make_data(rng, n=100, mu=mu, sigma_p=1.0)
    w = w - lr * grad(w, data.x, data.y)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIGN = np.array([1.0, -1.0])  # class of F_j: j = +1 for W[0], -1 for W[1]


@dataclass(frozen=True)
class Data:
    x: np.ndarray  # (n, 2, d): patch 0 = y mu, patch 1 = xi
    y: np.ndarray  # (n,) in {-1, +1}


def make_signal(rng: np.random.Generator, dim: int, norm: float) -> np.ndarray:
    v = rng.standard_normal(dim)
    return norm * v / np.linalg.norm(v)


def make_data(rng: np.random.Generator, y: np.ndarray, mu: np.ndarray, sigma_p: float) -> Data:
    """x = [y mu, xi], xi ~ N(0, sigma_p^2 (I - mu mu^T / ||mu||^2))."""
    n, d = len(y), len(mu)
    xi = sigma_p * rng.standard_normal((n, d))
    u = mu / np.linalg.norm(mu)
    xi -= np.outer(xi @ u, u)
    x = np.stack([y[:, None] * mu[None, :], xi], axis=1)
    return Data(x, y.astype(float))


def forward(w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f(W, x) (n,) and the pre-activations (n, 2 patches, 2 m filters: F_+1's then F_-1's)."""
    m = w.shape[1]
    pre = x @ w.reshape(2 * m, -1).T  # (n, 2, 2m)
    act = np.maximum(pre, 0.0).sum(axis=1)  # (n, 2m)
    f = (act[:, :m].sum(axis=1) - act[:, m:].sum(axis=1)) / m
    return f, pre


def loss(w: np.ndarray, data: Data) -> float:
    f, _ = forward(w, data.x)
    return float(np.logaddexp(0.0, -data.y * f).mean())


def grad(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of the mean logistic loss."""
    f, pre = forward(w, x)
    n, m, d = len(y), w.shape[1], w.shape[2]
    g = -y / (1.0 + np.exp(np.clip(y * f, -50, 50))) / n  # dL/df, (n,)
    coef = (pre > 0) * g[:, None, None]  # (n, 2, 2m)
    gw = coef.reshape(2 * n, 2 * m).T @ x.reshape(2 * n, d) / m  # (2m, d)
    return gw.reshape(2, m, d) * SIGN[:, None, None]


def gd(w: np.ndarray, data: Data, *, steps: int, lr: float) -> np.ndarray:
    for _ in range(steps):
        w = w - lr * grad(w, data.x, data.y)
    return w


def test_error(w: np.ndarray, data: Data) -> float:
    f, _ = forward(w, data.x)
    return float((np.sign(f) != data.y).mean())


def misaligned(w: np.ndarray, mu: np.ndarray) -> int:
    """Filters with <w_j,r, j mu> <= 0."""
    return int(((w @ mu) * SIGN[:, None] <= 0).sum())

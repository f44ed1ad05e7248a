"""Non-stationary average-reward MDPs: piecewise-constant switches and smooth drift.

Both are stored as pieces: ``bounds`` (the first step of each piece, plus T) and, per piece, a
dense transition array P (S, A, S), rewards r (S, A) and the optimal gain J* (by relative value
iteration, :mod:`training.research.avg_reward_q.mdp`). Drift is sampled on ``drift_pieces``
evenly spaced pieces, small steps along (1 - w) M_A + w M_B with w(t) = (1 - cos 2 pi c t / T) / 2.

Usage::

    env = switching(seed=0, horizon=10_000, changes=3, states=5, actions=3)
    env.variation  # Delta_T
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.research.avg_reward_q.mdp import from_dense, relative_value_iteration


@dataclass(frozen=True)
class PiecewiseMDP:
    bounds: np.ndarray  # (n + 1,) step at which each piece starts, then T
    p: np.ndarray  # (n, S, A, S)
    r: np.ndarray  # (n, S, A)
    gain: np.ndarray  # (n,) J* of each piece

    @property
    def variation(self) -> float:
        """Delta_T = sum over changes of max |r' - r| + max_(s, a) ||P'(.|s, a) - P(.|s, a)||_1."""
        dr = np.abs(np.diff(self.r, axis=0)).max(axis=(1, 2))
        dp = np.abs(np.diff(self.p, axis=0)).sum(-1).max(axis=(1, 2))
        return float((dr + dp).sum())

    def optimal_total(self) -> float:
        """sum_t J*_t."""
        return float((np.diff(self.bounds) * self.gain).sum())


def random_ergodic(
    rng: np.random.Generator, states: int, actions: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dense Dirichlet(0.5) rows (every state reachable: ergodic) and rewards with one good action
    per state, so policies differ clearly in gain."""
    p = rng.dirichlet(np.full(states, 0.5), size=(states, actions)) * 0.9 + 0.1 / states
    r = rng.uniform(0.0, 0.5, size=(states, actions))
    r[np.arange(states), rng.integers(0, actions, states)] += 0.5
    return p, r


def _gain(p: np.ndarray, r: np.ndarray) -> float:
    return relative_value_iteration(from_dense("piece", p, r), tol=1e-9)[0]


def _pieces(bounds: np.ndarray, ps: list[np.ndarray], rs: list[np.ndarray]) -> PiecewiseMDP:
    p, r = np.stack(ps), np.stack(rs)
    gain = np.array([_gain(p[i], r[i]) for i in range(len(ps))])
    return PiecewiseMDP(bounds.astype(np.int64), p, r, gain)


def switching(*, seed: int, horizon: int, changes: int, states: int, actions: int) -> PiecewiseMDP:
    """``changes`` switches at random times (so no restart period can line up with them), each
    to a fresh random MDP. The times are drawn from the horizon's own stream, so all seeds of a
    batch share them."""
    rng = np.random.default_rng([seed, 1])
    times = np.random.default_rng([horizon, changes, 3]).choice(
        np.arange(1, horizon), size=changes, replace=False
    )
    bounds = np.concatenate([[0], np.sort(times), [horizon]]).astype(float)
    ps, rs = zip(*(random_ergodic(rng, states, actions) for _ in range(changes + 1)), strict=True)
    return _pieces(bounds, list(ps), list(rs))


def drifting(
    *, seed: int, horizon: int, changes: int, states: int, actions: int, drift_pieces: int = 200
) -> PiecewiseMDP:
    """``changes`` full cycles of smooth drift between two random MDPs."""
    rng = np.random.default_rng([seed, 2])
    pa, ra = random_ergodic(rng, states, actions)
    pb, rb = random_ergodic(rng, states, actions)
    bounds = np.linspace(0, horizon, drift_pieces + 1).round()
    mids = 0.5 * (bounds[:-1] + bounds[1:])
    w = 0.5 * (1 - np.cos(2 * np.pi * changes * mids / horizon))
    ps = [(1 - x) * pa + x * pb for x in w]
    rs = [(1 - x) * ra + x * rb for x in w]
    return _pieces(bounds, ps, rs)

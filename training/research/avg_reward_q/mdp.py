"""Finite MDPs for average-reward Q-learning: generators, relative value iteration, policy gains.

An MDP here is sparse: each (s, a) reaches at most K next states, stored as indices ``nxt``
(S, A, K) with probabilities ``prob`` (S, A, K), and has a deterministic reward ``r`` (S, A) in
[0, 1]. Sampling a next state for every (s, a) at once (a generative model) costs O(S A K).

- :func:`random_weakly_communicating`: a communicating recurrent block plus states that every
  policy leaves for good (transient), the setting of NOTES.md (h).
- :func:`riverswim`: the classic chain with a large bias span.
- :func:`relative_value_iteration`: the ground truth J*, h* (with the aperiodicity transform).
- :func:`policy_gain`: J^pi per start state, the Cesaro limit of P_pi^n r_pi.

Usage::

    mdp = riverswim(6)
    gain, h = relative_value_iteration(mdp)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MDP:
    name: str
    nxt: np.ndarray  # (S, A, K) int: next-state indices
    prob: np.ndarray  # (S, A, K) float: their probabilities (rows sum to 1)
    r: np.ndarray  # (S, A) float in [0, 1]

    @property
    def num_states(self) -> int:
        return int(self.r.shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.r.shape[1])

    def dense(self) -> np.ndarray:
        """P as an (S, A, S) array."""
        s, a, k = self.nxt.shape
        p = np.zeros((s, a, s))
        for i in range(k):
            np.add.at(p, (np.arange(s)[:, None], np.arange(a)[None, :], self.nxt[..., i]),
                      self.prob[..., i])  # fmt: skip
        return p

    def cdf(self) -> np.ndarray:
        c = np.cumsum(self.prob, axis=-1)
        c[..., -1] = 1.0  # guard against rounding: a uniform draw always lands in the support
        return c


def from_dense(name: str, p: np.ndarray, r: np.ndarray) -> MDP:
    """Sparse form of a dense (S, A, S) transition array."""
    s, a, _ = p.shape
    k = int((p > 0).sum(-1).max())
    nxt = np.zeros((s, a, k), dtype=np.int64)
    prob = np.zeros((s, a, k))
    for i in range(s):
        for j in range(a):
            idx = np.flatnonzero(p[i, j] > 0)
            nxt[i, j, : len(idx)] = idx
            nxt[i, j, len(idx) :] = idx[-1]
            prob[i, j, : len(idx)] = p[i, j, idx]
    return MDP(name, nxt, prob, np.asarray(r, dtype=float))


def random_weakly_communicating(
    num_states: int = 20,
    num_actions: int = 4,
    *,
    transient: int = 5,
    support: int = 3,
    seed: int = 0,
) -> MDP:
    """States ``0..transient-1`` are left by every action and never re-entered; the rest form a
    communicating block (a random cycle through the block is reachable by one action per state,
    so every recurrent state reaches every other). Rewards uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    s, a = num_states, num_actions
    rec = np.arange(transient, s)
    nxt = np.zeros((s, a, support), dtype=np.int64)
    for i in range(s):
        for j in range(a):
            if i < transient:  # transient: mostly other transient states further on, else recurrent
                pool = np.concatenate([np.arange(i + 1, transient), rec])
            else:
                pool = rec
            nxt[i, j] = rng.choice(pool, size=support, replace=len(pool) < support)
    order = rng.permutation(rec)
    for idx, st in enumerate(order):  # action 0 keeps a route around the recurrent block
        nxt[st, 0, 0] = order[(idx + 1) % len(order)]
    prob = rng.dirichlet(np.ones(support), size=(s, a))
    r = rng.uniform(0.0, 1.0, size=(s, a))
    return MDP(f"random-S{s}-A{a}-T{transient}-seed{seed}", nxt, prob, r)


def riverswim(num_states: int = 6, left_reward: float = 0.005) -> MDP:
    """RiverSwim (Strehl & Littman 2008): action 0 swims left (always succeeds), action 1 swims
    right against the current (0.35 right, 0.6 stay, 0.05 left in the middle); reward 0.005 for
    staying at the left bank, 1 at the right bank."""
    s = num_states
    p = np.zeros((s, 2, s))
    r = np.zeros((s, 2))
    for i in range(s):
        p[i, 0, max(i - 1, 0)] = 1.0
        if i == 0:
            p[i, 1, 0], p[i, 1, 1] = 0.4, 0.6
        elif i == s - 1:
            p[i, 1, i], p[i, 1, i - 1] = 0.6, 0.4
        else:
            p[i, 1, i + 1], p[i, 1, i], p[i, 1, i - 1] = 0.35, 0.6, 0.05
    r[0, 0] = left_reward
    r[s - 1, 1] = 1.0
    return from_dense(f"riverswim-{s}", p, r)


def relative_value_iteration(
    mdp: MDP, *, tol: float = 1e-11, max_iter: int = 1_000_000, tau: float = 0.5
) -> tuple[float, np.ndarray]:
    """(J*, h*) of a weakly communicating MDP, h* normalised to h*(0) = 0.

    Runs RVI on the aperiodic transform P' = tau I + (1 - tau) P (same gain; bias h'/(1-tau)),
    stopping when the span of successive differences is below ``tol``."""
    p = mdp.dense()
    s = mdp.num_states
    eye = np.eye(s)[:, None, :]
    pt = tau * eye + (1 - tau) * p
    h = np.zeros(s)
    for _ in range(max_iter):
        th = (mdp.r + pt @ h).max(axis=1)
        diff = th - h
        if diff.max() - diff.min() < tol:
            gain = 0.5 * (diff.max() + diff.min())
            hh = (th - th[0]) * (1 - tau)
            return float(gain), hh
        h = th - th[0]
    raise RuntimeError(f"relative value iteration did not converge in {max_iter} iterations")


def span(h: np.ndarray) -> float:
    return float(h.max() - h.min())


def policy_gain(mdp: MDP, policy: np.ndarray, *, squarings: int = 48) -> np.ndarray:
    """J^pi(s) for a deterministic policy: the limit of (P'_pi)^n r_pi with the aperiodicity
    transform P' = (I + P_pi)/2, by repeated squaring (2^48 steps)."""
    s = mdp.num_states
    p = mdp.dense()[np.arange(s), policy]  # (S, S)
    m = 0.5 * (np.eye(s) + p)
    for _ in range(squarings):
        m = m @ m
        m /= m.sum(axis=1, keepdims=True)  # rounding would otherwise compound over 2^k steps
    return m @ mdp.r[np.arange(s), policy]


def optimality_gap(mdp: MDP, gain_star: float, policy: np.ndarray) -> float:
    """max_s (J* - J^pi(s)): the policy's worst-start shortfall in average reward."""
    return float(gain_star - policy_gain(mdp, policy).min())

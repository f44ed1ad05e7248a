"""Tabular NS-NAC, NAC and BORL-NS-NAC, run as one batch of independent agents (NOTES.md (i)).

Each agent b follows its own trajectory in environment ``env_of[b]`` with its own configuration
(H, alpha, beta). One step, for every agent at once:

- act: a ~ softmax(theta[s]), observe r_t(s, a) and s' ~ P_t(. | s, a), a' ~ softmax(theta[s']);
- critic (rate beta): eta += beta (r - eta); Q[s, a] += beta (r - eta + Q[s', a'] - Q[s, a]);
- actor (rate alpha), the natural-gradient step of a softmax policy: theta[s] += alpha (Q[s] -
  mean_a Q[s]);
- restart (NS-NAC): every H steps theta, Q and eta go back to zero.

BORL-NS-NAC agents pick their (H, alpha, beta) per epoch with :class:`Exp3` (reward: the epoch's
mean reward, in [0, 1]); the actor and critic carry on across epochs (an epoch-start reset would
cap every arm's restart period at the epoch length), restarting on the chosen arm's timer.

Usage::

    regret = run_batch(envs, env_of, configs, borl=[], horizon=T, seed=0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from training.research.ns_nac.env import PiecewiseMDP


@dataclass
class Exp3:
    """EXP3 (Auer et al. 2002) over ``arms`` arms with rewards in [0, 1]."""

    arms: int
    gamma: float
    rng: np.random.Generator
    log_w: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.log_w = np.zeros(self.arms)

    @staticmethod
    def rate(arms: int, rounds: int) -> float:
        """The standard exploration rate min(1, sqrt(K ln K / ((e - 1) n)))."""
        return min(1.0, math.sqrt(arms * math.log(max(arms, 2)) / ((math.e - 1) * max(rounds, 1))))

    def probs(self) -> np.ndarray:
        w = np.exp(self.log_w - self.log_w.max())
        return (1 - self.gamma) * w / w.sum() + self.gamma / self.arms

    def pick(self) -> int:
        return int(self.rng.choice(self.arms, p=self.probs()))

    def update(self, arm: int, reward: float) -> None:
        p = self.probs()[arm]
        self.log_w[arm] += self.gamma * (reward / p) / self.arms


@dataclass
class BatchResult:
    regret: np.ndarray  # (B,) dynamic regret sum_t J*_t - r_t
    reward: np.ndarray  # (B,) total reward
    arms: list[list[int]]  # per BORL agent: the arm of each epoch


def run_batch(
    envs: Sequence[PiecewiseMDP],
    env_of: np.ndarray,
    configs: np.ndarray,
    *,
    borl: Sequence[int] = (),
    borl_grid: np.ndarray | None = None,
    epoch: int = 0,
    horizon: int,
    seed: int,
    progress: object = None,
) -> BatchResult:
    """Run B agents for ``horizon`` steps. ``configs`` (B, 3) holds (H, alpha, beta) per agent
    (H = inf: never restart); agents listed in ``borl`` instead choose a row of ``borl_grid``
    per ``epoch`` steps with EXP3."""
    b = len(env_of)
    s_, a_ = envs[0].p.shape[1], envs[0].p.shape[2]
    rng = np.random.default_rng([seed, 7])
    p_all = np.stack([e.p for e in envs])  # (E, n, S, A, S)
    r_all = np.stack([e.r for e in envs])  # (E, n, S, A)
    g_all = np.stack([e.gain for e in envs])  # (E, n)
    bounds = envs[0].bounds
    for e in envs:
        if not np.array_equal(e.bounds, bounds):
            raise ValueError("all environments of a batch must change at the same steps")
    cfg = np.array(configs, dtype=float).copy()
    theta = np.zeros((b, s_, a_))
    q = np.zeros((b, s_, a_))
    eta = np.zeros(b)
    since = np.zeros(b, dtype=np.int64)  # steps since the last restart
    state = rng.integers(0, s_, b)
    regret = np.zeros(b)
    total = np.zeros(b)
    rows = np.arange(b)
    borl_idx = np.asarray(borl, dtype=np.int64)
    bandits = []
    arm_cfg = np.zeros((0, 3)) if borl_grid is None else np.asarray(borl_grid, dtype=float)
    if len(borl_idx):
        if not len(arm_cfg) or epoch <= 0:
            raise ValueError("BORL agents need borl_grid and a positive epoch")
        n_epochs = math.ceil(horizon / epoch)
        bandits = [
            Exp3(
                len(arm_cfg),
                Exp3.rate(len(arm_cfg), n_epochs),
                np.random.default_rng([seed, 11, i]),
            )
            for i in range(len(borl_idx))
        ]
    arms: list[list[int]] = [[] for _ in borl_idx]
    epoch_reward = np.zeros(len(borl_idx))
    piece = -1
    chunk = 2048
    for t in range(horizon):
        if piece + 1 < len(bounds) - 1 and t >= bounds[piece + 1]:
            piece += 1
            p_cur = p_all[:, piece][env_of]  # (B, S, A, S)
            r_cur = r_all[:, piece][env_of]  # (B, S, A)
            j_cur = g_all[:, piece][env_of]  # (B,)
            cdf = np.cumsum(p_cur, axis=-1)
            cdf[..., -1] = 1.0
        if t % chunk == 0:
            u = rng.random((min(chunk, horizon - t), 3, b))
        if len(borl_idx) and t % epoch == 0:
            for i, ag in enumerate(borl_idx):
                if t > 0:
                    bandits[i].update(arms[i][-1], epoch_reward[i] / epoch)
                arm = bandits[i].pick()
                arms[i].append(arm)
                cfg[ag] = arm_cfg[arm]  # the learner carries on; only its knobs change
            epoch_reward[:] = 0.0
        reset = since >= cfg[:, 0]
        if reset.any():
            theta[reset], q[reset], eta[reset], since[reset] = 0.0, 0.0, 0.0, 0
        ut = u[t % chunk]
        pol = _softmax(theta[rows, state])  # (B, A)
        act = (ut[0][:, None] > np.cumsum(pol, axis=1)[:, :-1]).sum(1)
        rew = r_cur[rows, state, act]
        nxt = (ut[1][:, None] > cdf[rows, state, act][:, :-1]).sum(1)
        pol2 = _softmax(theta[rows, nxt])
        act2 = (ut[2][:, None] > np.cumsum(pol2, axis=1)[:, :-1]).sum(1)
        alpha, beta = cfg[:, 1], cfg[:, 2]
        delta = rew - eta + q[rows, nxt, act2] - q[rows, state, act]
        eta += beta * (rew - eta)
        q[rows, state, act] += beta * delta
        qs = q[rows, state]
        theta[rows, state] += alpha[:, None] * (qs - qs.mean(axis=1, keepdims=True))
        regret += j_cur - rew
        total += rew
        if len(borl_idx):
            epoch_reward += rew[borl_idx]
        since += 1
        state = nxt
        if progress is not None and t % 1000 == 999:
            progress.update(1000)  # type: ignore[attr-defined]
    return BatchResult(regret, total, arms)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(z / z.sum(axis=-1, keepdims=True))

"""Stage-wise synchronous Q-learning, single-agent and federated (NOTES.md (h)).

The local step (:func:`local_q_steps`) is what a Flower client runs between two averaging
points: ``steps`` synchronous Q-learning updates of every (s, a) with one fresh sample each,
discount gamma_k and step size eta_t = 1 / (1 + (1 - gamma_k)(t + t_off)), where t_off makes
the step size continue across a stage change instead of jumping back to 1. A schedule
(:func:`stage_rounds`) is the list of those rounds; the server averages the agents' Q-tables
after each one. At a stage change every agent shifts the averaged table by the current gain
estimate so the warm start matches the new discount's scale (Q_gamma ~ J / (1 - gamma) + h).

Usage::

    rounds = stage_rounds(cfg)
    exp = q_experiment("m4", mdp_spec, seed=0, agents=4, rounds=rounds)
    (res,) = InProcessBackend().run([exp])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from training.research.avg_reward_q.config import AvgRewardQConfig
from training.research.avg_reward_q.mdp import MDP, random_weakly_communicating, riverswim
from training.research.federated import Arrays, FedExperiment

LOCAL_STEP = "training.research.avg_reward_q.train:local_q_steps"


def build_mdp(spec: Mapping[str, Any]) -> MDP:
    """An MDP from its JSON spec: {"kind": "random", states, actions, transient, support, seed}
    or {"kind": "riverswim", states}."""
    return _build_mdp_cached(tuple(sorted(spec.items())))


@lru_cache(maxsize=16)
def _build_mdp_cached(items: tuple[tuple[str, Any], ...]) -> MDP:
    spec = dict(items)
    if spec["kind"] == "random":
        return random_weakly_communicating(
            int(spec["states"]), int(spec["actions"]), transient=int(spec["transient"]),
            support=int(spec["support"]), seed=int(spec["seed"]),
        )  # fmt: skip
    if spec["kind"] == "riverswim":
        return riverswim(int(spec["states"]), float(spec.get("left", 0.005)))
    raise ValueError(f"unknown MDP kind {spec['kind']!r}")


def final_gamma(cfg: AvgRewardQConfig, stages: int | None = None) -> float:
    return 1 - (1 - cfg.gamma1) * 2.0 ** -((stages or cfg.stages) - 1)


def stage_rounds(
    cfg: AvgRewardQConfig,
    *,
    budget: float = 1.0,
    stages: int | None = None,
    fixed_gamma: float | None = None,
    sync_every_step: bool = False,
) -> list[dict[str, Any]]:
    """The rounds of the stage-wise schedule with every stage length times ``budget``, or of one
    fixed-discount stage with the same total steps and averaging rounds (``fixed_gamma``). Each
    round: stage, gamma, the step clock ``t0`` and its offset ``t_off``, ``steps`` local updates,
    and ``prev_gamma`` on the first round of a stage (the warm-start shift)."""
    spec = []
    for k in range(1, (stages or cfg.stages) + 1):
        one_minus = (1 - cfg.gamma1) * 2.0 ** -(k - 1)
        syncs = math.ceil(cfg.sync_base / one_minus)
        length = max(syncs, math.ceil(budget * cfg.stage_base / one_minus**cfg.stage_power))
        spec.append((1 - one_minus, length, syncs))
    stages_ = spec
    if fixed_gamma is not None:
        stages_ = [(fixed_gamma, sum(s[1] for s in spec), sum(s[2] for s in spec))]
    rounds: list[dict[str, Any]] = []
    prev_gamma: float | None = None
    t_off, prev_len = 0.0, 0
    for k, (gamma, length, syncs) in enumerate(stages_, start=1):
        if sync_every_step:
            syncs = length
        bounds = np.linspace(0, length, syncs + 1).round().astype(int)
        if prev_gamma is not None and cfg.lr_continue:  # carry on where the last stage ended
            t_off = (t_off + prev_len) * (1 - prev_gamma) / (1 - gamma)
        for i in range(syncs):
            rounds.append(
                {
                    "stage": k,
                    "gamma": gamma,
                    "t0": int(bounds[i]),
                    "t_off": t_off,
                    "steps": int(bounds[i + 1] - bounds[i]),
                    "prev_gamma": prev_gamma if i == 0 else None,
                }
            )
        prev_gamma, prev_len = gamma, length
    for idx, r in enumerate(rounds):
        r["round"] = idx
    return rounds


def q_experiment(
    name: str,
    mdp: Mapping[str, Any],
    *,
    seed: int,
    agents: int,
    rounds: list[dict[str, Any]],
    reward_noise: bool = False,
) -> FedExperiment:
    m = build_mdp(mdp)
    q0 = np.zeros((m.num_states, m.num_actions))
    config = {"mdp": dict(mdp), "seed": seed, "reward_noise": reward_noise}
    return FedExperiment(name, LOCAL_STEP, config, agents, {"q": q0}, rounds)


def local_q_steps(
    config: Mapping[str, Any],
    clients: Sequence[int],
    arrays: Arrays,
    round_cfg: Mapping[str, Any],
) -> list[tuple[Arrays, float]]:
    """``round_cfg['steps']`` synchronous Q-learning updates for each agent in ``clients`` from
    the global table; agent c's samples come from its own stream (seed, round, c)."""
    mdp = build_mdp(config["mdp"])
    gamma = float(round_cfg["gamma"])
    q = np.array(arrays["q"], dtype=np.float64)
    prev = round_cfg.get("prev_gamma")
    if prev is not None:  # stage change: keep the gain part, rescaled to the new discount
        gain = (1 - float(prev)) * q.max(axis=1).mean()
        q = q + gain * (1 / (1 - gamma) - 1 / (1 - float(prev)))
    b, steps = len(clients), int(round_cfg["steps"])
    s, a = mdp.num_states, mdp.num_actions
    qs = np.repeat(q[None], b, axis=0)  # (B, S, A)
    if steps == 0:
        return [({"q": qs[i]}, 1.0) for i in range(b)]
    noisy = bool(config.get("reward_noise", False))
    draws = np.stack(
        [
            np.random.default_rng([int(config["seed"]), int(round_cfg["round"]), int(c)]).random(
                (1 + noisy, steps, s, a)
            )
            for c in clients
        ],
        axis=2,
    )  # (1 or 2, steps, B, S, A)
    u = draws[0]
    # Bernoulli(r) rewards when noisy, else r itself
    rewards = (draws[1] < mdp.r).astype(np.float64) if noisy else np.broadcast_to(mdp.r, u.shape)
    cdf = mdp.cdf()
    pick = (u[..., None] > cdf).sum(-1)  # (steps, B, S, A): index into the K-support
    nxt = np.take_along_axis(
        np.broadcast_to(mdp.nxt, (steps, b, s, a, mdp.nxt.shape[-1])), pick[..., None], axis=-1
    )[..., 0]  # (steps, B, S, A) next states
    rows = np.arange(b)[:, None, None]
    t0, t_off = int(round_cfg["t0"]), float(round_cfg["t_off"])
    for i in range(steps):
        eta = 1.0 / (1.0 + (1 - gamma) * (t0 + i + t_off))
        v = qs.max(axis=2)  # (B, S)
        target = rewards[i] + gamma * v[rows, nxt[i]]
        qs += eta * (target - qs)
    return [({"q": qs[i]}, 1.0) for i in range(b)]


def greedy(q: np.ndarray) -> np.ndarray:
    return np.asarray(q.argmax(axis=1))

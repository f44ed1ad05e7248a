"""Budget allocators to compare TAB with: static, no budget, difficulty split, oracle.

Each is an ``env.Allocator`` (state, turn) -> asked tokens, built for one batch of problems.

- ``static``: the paper's Static baseline: an equal share ``B / T`` every turn (it knows ``T``).
- ``no_budget``: no cap at all (run it on problems with an unbounded ``B``): what the solvers
  would spend unconstrained, and the accuracy ceiling of the replay data.
- ``difficulty``: splits what is left in proportion to the sub-question's predicted length (from
  the query embedding, ``length.py``) against the average predicted length for each turn still
  to come (it knows ``T`` but not the future questions).
- ``oracle``: knows every turn's needed length for the episode's solver (not correctness): it
  grants exactly the needed lengths when they fit into ``B`` and spends nothing otherwise. A
  lower bound on the tokens any allocator needs for its (whole-problem) accuracy.
- ``oracle_turn``: the same knowledge, for per-turn accuracy: it answers the most turns that fit
  into ``B`` (the shortest first), each with exactly its needed length, and spends nothing on the
  others. Both oracles skip turns; they are bounds, not something a gateway could serve.

Usage::

    out = env.rollout(problems, static(problems))
"""

from __future__ import annotations

import numpy as np

from budget_controller.data import Problems
from budget_controller.env import Allocator, FloatArray, ReplayEnv
from budget_controller.features import TurnState

UNBOUNDED = 1e9


def static(p: Problems) -> Allocator:
    share = (p.budget / np.maximum(p.num_turns, 1)).astype(np.float32)

    def allocate(_s: TurnState, _t: int) -> FloatArray:
        return share

    return allocate


def no_budget(p: Problems) -> Allocator:
    def allocate(_s: TurnState, _t: int) -> FloatArray:
        return np.full(len(p), UNBOUNDED, dtype=np.float32)

    return allocate


def unbounded(p: Problems) -> Problems:
    return Problems(p.questions, p.num_turns, np.full(len(p), UNBOUNDED, np.float32), p.solver)


def difficulty(p: Problems, env: ReplayEnv) -> Allocator:
    mean_pred = float(env.pred_tokens[env.data.split == "train"].mean())

    def allocate(s: TurnState, t: int) -> FloatArray:
        pred = np.exp(env.spec.predictor.predict(s.current)[0])
        later = np.maximum(p.num_turns - t - 1, 0) * mean_pred
        left = np.maximum(s.budget - s.used, 0.0)
        return (left * pred / (pred + later)).astype(np.float32)

    return allocate


def oracle(p: Problems, env: ReplayEnv) -> Allocator:
    need, _ = env.needed(p)
    fits = need.sum(axis=1) <= p.budget

    def allocate(_s: TurnState, t: int) -> FloatArray:
        return np.where(fits, need[:, t], 0.0).astype(np.float32)

    return allocate


def oracle_turn(p: Problems, env: ReplayEnv) -> Allocator:
    need, _ = env.needed(p)
    active = p.questions >= 0
    # The shortest turns first, as many as fit into B: the most turns B can finish.
    order = np.argsort(np.where(active, need, np.inf), axis=1, kind="stable")
    ranked = np.take_along_axis(np.where(active, need, 0.0), order, axis=1)
    fits_sorted = (np.cumsum(ranked, axis=1) <= p.budget[:, None]) & np.take_along_axis(
        active, order, axis=1
    )
    fits = np.zeros_like(fits_sorted)
    np.put_along_axis(fits, order, fits_sorted, axis=1)

    def allocate(_s: TurnState, t: int) -> FloatArray:
        return np.where(fits[:, t], need[:, t], 0.0).astype(np.float32)

    return allocate

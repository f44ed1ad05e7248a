"""TAB's trajectory reward, as a pure function (unit-tested without a trainer).

``r = w * solved + (1 - w) * turn_accuracy
     - over_penalty * max(0, sum_t asked_t - B) / B - token_cost * tokens / B``

Accuracy counts turn by turn as well as for the whole problem (``w = problem_weight``): in a
conversation with a person a later turn is still worth answering after an earlier one failed,
so the policy must not learn to write a conversation off. The hinge is the paper's (on the
budgets asked beyond the global budget, with its lambda per budget-fraction so one value serves
every ``B``). The token cost is ours: the controller grants at most what is left, so the hinge
alone never makes the policy save tokens that it may spend (see ``config.py``).

Usage::

    r = trajectory_reward(solved, turn_acc, asked_total, tokens, budget, problem_weight=0.5,
                          over_penalty=0.1, token_cost=0.05)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def trajectory_reward(
    solved: FloatArray,
    turn_accuracy: FloatArray,
    asked_total: FloatArray,
    tokens: FloatArray,
    budget: FloatArray,
    *,
    problem_weight: float,
    over_penalty: float,
    token_cost: float,
) -> FloatArray:
    B = np.maximum(budget, 1.0)
    over = np.maximum(asked_total - B, 0.0) / B
    acc = problem_weight * solved + (1.0 - problem_weight) * turn_accuracy
    return (acc - over_penalty * over - token_cost * tokens / B).astype(np.float32)


def group_advantages(
    rewards: FloatArray, group: int, *, scale: str = "batch", eps: float = 1e-4
) -> FloatArray:
    """GRPO: r minus the mean of its group (rewards are grouped in a row), divided by a std.

    ``scale`` follows TRL's ``scale_rewards``: ``"group"`` (the original GRPO: each group's own
    std), ``"batch"`` (one std over the batch) or ``"none"`` (Dr. GRPO). With sparse success most
    groups solve nothing and differ only by token cost; a per-group std blows those tiny
    differences up to unit size and the policy learns to spend nothing, so we use ``"batch"``.
    """
    r = rewards.reshape(-1, group)
    adv = r - r.mean(axis=1, keepdims=True)
    if scale == "group":
        adv = adv / (r.std(axis=1, keepdims=True) + eps)
    elif scale == "batch":
        adv = adv / (r.std() + eps)
    elif scale != "none":
        raise ValueError(f"scale must be group, batch or none, not {scale!r}")
    return adv.reshape(-1).astype(np.float32)

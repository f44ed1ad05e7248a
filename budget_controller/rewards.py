"""TAB's trajectory reward, as a pure function (unit-tested without a trainer).

``r = solved - over_penalty * max(0, sum_t asked_t - B) / B - token_cost * tokens / B``

The first two terms are the paper's (accuracy minus a hinge on the budgets asked beyond the
global budget, with its lambda expressed per budget-fraction so one value serves every ``B``).
The last is ours: the controller grants at most what is left, so the hinge alone never makes the
policy save tokens that it may spend (see ``config.py``).

Usage::

    r = trajectory_reward(solved, asked_total, tokens, budget, over_penalty=1.0, token_cost=0.15)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def trajectory_reward(
    solved: FloatArray,
    asked_total: FloatArray,
    tokens: FloatArray,
    budget: FloatArray,
    *,
    over_penalty: float,
    token_cost: float,
) -> FloatArray:
    B = np.maximum(budget, 1.0)
    over = np.maximum(asked_total - B, 0.0) / B
    return (solved - over_penalty * over - token_cost * tokens / B).astype(np.float32)


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

"""The reward and GRPO's advantages, as pure functions."""

from __future__ import annotations

import numpy as np
import pytest

from budget_controller.rewards import group_advantages, trajectory_reward


def test_reward_is_accuracy_minus_hinge_and_token_cost() -> None:
    r = trajectory_reward(
        np.array([1.0, 1.0, 0.0, 0.0], dtype=np.float32),
        turn_accuracy=np.array([1.0, 1.0, 0.0, 0.5], dtype=np.float32),
        asked_total=np.array([100.0, 150.0, 50.0, 100.0], dtype=np.float32),
        tokens=np.array([50.0, 100.0, 0.0, 100.0], dtype=np.float32),
        budget=np.array([100.0, 100.0, 100.0, 100.0], dtype=np.float32),
        problem_weight=0.5,
        over_penalty=1.0,
        token_cost=0.2,
    )
    # a problem failed at its first turn still earns its correct later turns (the last one)
    np.testing.assert_allclose(r, [1 - 0.1, 1 - 0.5 - 0.2, 0.0, 0.25 - 0.2], atol=1e-6)


def test_group_advantages_are_centred_per_group() -> None:
    r = np.array([1, 0, 0, 0, 0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    for scale in ("group", "batch", "none"):
        a = group_advantages(r, 4, scale=scale)
        np.testing.assert_allclose(a.reshape(2, 4).sum(axis=1), 0.0, atol=1e-5)
        assert a[0] > 0 > a[1] and np.all(a[4:] == 0)
    # the original GRPO scales each group to unit std; "batch" uses one std for all
    g = group_advantages(r, 4, scale="group")
    assert g.reshape(2, 4)[0].std() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError):
        group_advantages(r, 4, scale="nope")

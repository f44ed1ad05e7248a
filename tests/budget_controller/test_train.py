"""GRPO on the replay environment: a smoke run, a learning check, the checkpoint round trip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import budget_controller
from budget_controller import BudgetController
from budget_controller.config import EnvConfig, PolicyConfig, TrainConfig
from budget_controller.data import SolverData
from budget_controller.env import ReplayEnv
from budget_controller.model import BudgetPolicy
from budget_controller.train import _validate, build_spec, train


def test_public_surface() -> None:
    assert budget_controller.__all__ == ["DEFAULT_CHECKPOINT", "BudgetController"]
    assert budget_controller.BudgetController is BudgetController
    with pytest.raises(AttributeError):
        _ = budget_controller.nothing_here  # type: ignore[attr-defined]


def test_grpo_smoke_changes_every_parameter_and_round_trips(tmp_path, data: SolverData) -> None:
    cfg = TrainConfig(
        steps=3, problems_per_step=8, num_generations=4, eval_every=1, out=str(tmp_path), threads=1
    )
    seen: list[dict[str, float]] = []
    torch.manual_seed(cfg.seed)
    init = BudgetPolicy(PolicyConfig(num_levels=len(data.cfg.level_list)))
    res = train(cfg, EnvConfig(), data=data, progress=False, on_step=seen.append)
    assert len(res.history) == 3 and all(np.isfinite(h["loss"]) for h in res.history)
    assert all("val_reward" in h for h in seen)
    policy, spec, info = BudgetPolicy.from_checkpoint(res.path)
    assert info["step"] == res.best["step"] and spec.levels == data.cfg.level_list
    final = dict(policy.named_parameters())
    for name, p in init.named_parameters():
        assert not torch.equal(p, final[name]), f"{name} did not change"
    ctl = BudgetController.load(res.path)
    e = data.embeddings[0]
    b = ctl.choose(
        embedding=e, turn=0, used=0, total=500, any_truncated=False, last_truncated=False
    )
    assert isinstance(b, int) and b >= 1
    with pytest.raises(ValueError):
        torch.save({"kind": "other"}, tmp_path / "x.pt")
        BudgetPolicy.from_checkpoint(tmp_path / "x.pt")


@pytest.mark.slow
def test_grpo_learns_to_beat_its_initial_policy(tmp_path, data: SolverData, env: ReplayEnv) -> None:
    cfg = TrainConfig(
        steps=40,
        problems_per_step=32,
        num_generations=8,
        eval_every=10,
        out=str(tmp_path),
        threads=1,
        lr=2e-3,
    )
    torch.manual_seed(cfg.seed)
    init = BudgetPolicy(PolicyConfig(num_levels=len(data.cfg.level_list)))
    val = data.sample_problems(
        "val", 1024, np.random.default_rng(10_000 + cfg.seed), per_turn=cfg.budget_range
    )
    before = _validate(copy.deepcopy(init), build_spec(data), env, val, cfg)
    res = train(cfg, EnvConfig(), data=data, progress=False)
    assert res.best["val_reward"] > before["val_reward"] + 0.01, (before, res.best)

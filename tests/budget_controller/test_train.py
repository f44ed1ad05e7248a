"""GRPO on the replay environment: a smoke run, a learning check, the checkpoint round trip."""

from __future__ import annotations

import copy
import dataclasses

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
        steps=3,
        init_steps=40,
        problems_per_step=8,
        num_generations=4,
        eval_every=1,
        out=str(tmp_path),
        threads=1,
    )
    seen: list[dict[str, float]] = []
    torch.manual_seed(cfg.seed)
    init = BudgetPolicy(PolicyConfig(num_levels=len(data.cfg.level_list)))
    res = train(cfg, EnvConfig(), data=data, progress=False, on_step=seen.append)
    # step 0: the supervised start (it follows the init rule most of the time), then GRPO
    assert res.history[0]["step"] == 0 and res.history[0]["init_agreement"] > 0.5
    grpo = res.history[1:]
    assert len(grpo) == 3 and all(np.isfinite(h["loss"]) for h in grpo)
    assert all("val_reward" in h and "val_turn_accuracy" in h for h in seen)
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
    # the gateway serves only the action set it was trained with: no skip level, ever
    with pytest.raises(ValueError, match="skip"):
        BudgetController(policy, dataclasses.replace(spec, levels=[0.0, *spec.levels[1:]]))
    with pytest.raises(ValueError, match="real attempt"):
        EnvConfig(levels="0,1,2")


def test_the_shipped_policy_never_grants_less_than_the_predicted_length(data: SolverData) -> None:
    """The served action set: whatever the state, a turn gets at least its predicted length."""
    ctl = BudgetController.load()
    assert min(ctl.spec.levels) >= 1
    rng = np.random.default_rng(0)
    for q in rng.choice(len(data.embeddings), size=40, replace=False):
        e = data.embeddings[q]
        pred = float(np.exp(ctl.spec.predictor.predict(e[None])[0][0]))
        for used, lost in ((0, False), (900, True), (1990, True)):
            b = ctl.choose(
                embedding=e,
                past=[data.embeddings[(q + 1) % len(data.embeddings)]],
                turn=1,
                used=used,
                total=2000,
                any_truncated=lost,
                last_truncated=lost,
            )
            assert b >= round(pred) - 1


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
    # the supervised start already beats a uniform policy; GRPO keeps the best of both
    assert res.history[0]["val_reward"] > before["val_reward"] + 0.01, (before, res.history[0])
    assert res.best["val_reward"] >= res.history[0]["val_reward"]

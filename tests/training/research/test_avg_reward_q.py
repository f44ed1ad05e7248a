"""avg-reward-q: ground truth, the schedule, the local step and averaging, and the quick path."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from training.research.avg_reward_q.config import AvgRewardQConfig
from training.research.avg_reward_q.mdp import (
    from_dense,
    optimality_gap,
    policy_gain,
    random_weakly_communicating,
    relative_value_iteration,
    riverswim,
    span,
)
from training.research.avg_reward_q.train import local_q_steps, q_experiment, stage_rounds
from training.research.federated import InProcessBackend, weighted_mean
from training.research.jobs import run_job


def two_state(p_move: float) -> object:
    """State 0: stay (reward 0.2) or try to move to 1 (reward 0, succeeds w.p. p_move);
    state 1: stay (reward 1) or go back to 0 (reward 0)."""
    p = np.zeros((2, 2, 2))
    p[0, 0, 0] = 1.0
    p[0, 1, 1], p[0, 1, 0] = p_move, 1 - p_move
    p[1, 0, 1] = 1.0
    p[1, 1, 0] = 1.0
    r = np.array([[0.2, 0.0], [1.0, 0.0]])
    return from_dense("two-state", p, r)


@pytest.mark.parametrize("p_move", [1.0, 0.5, 0.25])
def test_rvi_matches_the_hand_solution(p_move):
    # By hand: J* = 1 (reach state 1 and stay); from 0, J* + h(0) = p h(1) + (1 - p) h(0),
    # so h(1) - h(0) = 1 / p.
    mdp = two_state(p_move)
    gain, h = relative_value_iteration(mdp)
    assert gain == pytest.approx(1.0, abs=1e-9)
    assert h[1] - h[0] == pytest.approx(1 / p_move, abs=1e-6)
    assert span(h) == pytest.approx(1 / p_move, abs=1e-6)


def test_policy_gain_per_start_state_and_gap():
    mdp = two_state(0.5)
    stay = np.array([0, 0])  # two recurrent classes: gain 0.2 from state 0, 1 from state 1
    np.testing.assert_allclose(policy_gain(mdp, stay), [0.2, 1.0], atol=1e-9)
    assert optimality_gap(mdp, 1.0, stay) == pytest.approx(0.8, abs=1e-9)
    assert optimality_gap(mdp, 1.0, np.array([1, 0])) == pytest.approx(0.0, abs=1e-9)


def test_riverswim_gain_and_the_optimal_policy():
    mdp = riverswim(6)
    gain, h = relative_value_iteration(mdp)
    assert optimality_gap(mdp, gain, np.ones(6, dtype=int)) == pytest.approx(0.0, abs=1e-9)
    assert optimality_gap(mdp, gain, np.zeros(6, dtype=int)) > 0.3
    assert span(h) > 5


def test_random_mdp_transient_states_are_never_reentered():
    mdp = random_weakly_communicating(12, 3, transient=4, seed=3)
    p = mdp.dense()
    assert np.allclose(p.sum(-1), 1.0)
    assert p[4:, :, :4].sum() == 0  # recurrent block never goes back
    for s in range(4):  # transient states only move forward
        assert p[s, :, : s + 1].sum() == 0


def test_schedule_rounds_per_stage_do_not_depend_on_the_budget():
    cfg = AvgRewardQConfig(stages=4, sync_base=0.5, stage_base=2.0)
    small, big = stage_rounds(cfg, budget=0.5), stage_rounds(cfg, budget=8.0)
    per_stage = [sum(r["stage"] == k for r in small) for k in range(1, 5)]
    assert per_stage == [1, 2, 4, 8]  # ceil(0.5 / (1 - gamma_k)), 1 - gamma_k = 2^-k
    assert len(big) == len(small)
    assert sum(r["steps"] for r in big) > 10 * sum(r["steps"] for r in small)
    assert [r["gamma"] for r in small if r["prev_gamma"] is not None] == [0.75, 0.875, 0.9375]
    fixed = stage_rounds(cfg, budget=8.0, fixed_gamma=0.9)
    assert len(fixed) == len(big) and {r["gamma"] for r in fixed} == {0.9}
    assert sum(r["steps"] for r in fixed) == sum(r["steps"] for r in big)


def test_local_step_one_update_from_zero_is_the_reward():
    spec = {"kind": "riverswim", "states": 4}
    rcfg = {"gamma": 0.9, "t0": 0, "t_off": 0.0, "steps": 1, "round": 0, "prev_gamma": None}
    ((arrays, w),) = local_q_steps({"mdp": spec, "seed": 0}, [0], {"q": np.zeros((4, 2))}, rcfg)
    np.testing.assert_allclose(arrays["q"], riverswim(4).r)  # eta_0 = 1, max Q = 0
    assert w == 1.0


def test_stage_change_shifts_by_the_gain_estimate():
    spec = {"kind": "riverswim", "states": 4}
    q = np.full((4, 2), 5.0)  # gain estimate (1 - 0.5) * 5 = 2.5
    rcfg = {"gamma": 0.75, "t0": 0, "t_off": 0.0, "steps": 0, "round": 3, "prev_gamma": 0.5}
    ((arrays, _),) = local_q_steps({"mdp": spec, "seed": 0}, [0], {"q": q}, rcfg)
    np.testing.assert_allclose(arrays["q"], 5.0 + 2.5 * (4 - 2))


def test_agents_are_independent_of_the_batch_they_run_in():
    cfg = {"mdp": {"kind": "riverswim", "states": 5}, "seed": 7, "reward_noise": True}
    q0 = {"q": np.random.default_rng(0).random((5, 2))}
    rcfg = {"gamma": 0.9, "t0": 3, "t_off": 0.0, "steps": 20, "round": 2, "prev_gamma": None}
    together = local_q_steps(cfg, [0, 1, 2], q0, rcfg)
    alone = [local_q_steps(cfg, [c], q0, rcfg)[0] for c in range(3)]
    for (a, _), (b, _) in zip(together, alone, strict=True):
        np.testing.assert_array_equal(a["q"], b["q"])
    assert not np.array_equal(together[0][0]["q"], together[1][0]["q"])  # own samples


def test_averaging_is_the_mean_of_the_agents_tables():
    cfg = AvgRewardQConfig(stages=2, stage_base=1.0)
    rounds = stage_rounds(cfg)
    exp = q_experiment("t", {"kind": "riverswim", "states": 4}, seed=1, agents=3, rounds=rounds)
    (res,) = InProcessBackend().run([exp])
    # replay round by round: each global table is the plain mean of the three agents' tables
    q = exp.init
    for rcfg, after in zip(rounds, res.history, strict=True):
        replies = local_q_steps(exp.config, [0, 1, 2], q, rcfg)
        mean = np.mean([a["q"] for a, _ in replies], axis=0)
        np.testing.assert_allclose(after["q"], mean, atol=1e-12)
        np.testing.assert_allclose(weighted_mean(replies)["q"], mean, atol=1e-12)
        q = after


def test_quick_path_writes_the_report(tmp_path):
    cfg = AvgRewardQConfig(
        states=8, transient=2, stages=3, max_stages=4, agents="1,2", river_states=5,
        river_chains="4,5", budget_min=0.25, budget_max=1.0, fixed_gammas="0.9",
        flower_agents=0, eps_random=0.05,
    )  # fmt: skip
    quick_cfg = replace(cfg)  # run_job applies the job's quick settings on top
    report = run_job("avg-reward-q", quick_cfg, tmp_path, seeds=2, quick=False, progress=False)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["job"] == "avg-reward-q" and on_disk["seeds"] == [0, 1]
    ids = {c["id"] for c in report["claims"]}
    assert ids == {"linear_speedup", "rounds_span_over_eps", "schedule_beats_fixed_discount"}
    for c in on_disk["claims"]:
        assert isinstance(c["holds"], bool) and c["figures"] and c["statement"]
    for name in ("summary.md", "speedup.png", "rounds_vs_span.png", "ablation.png"):
        assert (tmp_path / name).stat().st_size > 0

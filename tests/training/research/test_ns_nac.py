"""ns-nac: the environments, the restart rule, the bandit, and the quick path."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from training.research.avg_reward_q.mdp import from_dense, policy_gain
from training.research.jobs import run_job
from training.research.ns_nac.config import NSNACConfig
from training.research.ns_nac.env import drifting, switching
from training.research.ns_nac.train import Exp3, run_batch


def test_switching_pieces_variation_and_gains():
    env = switching(seed=0, horizon=1000, changes=3, states=3, actions=2)
    assert env.bounds[0] == 0 and env.bounds[-1] == 1000 and len(env.bounds) == 5
    assert np.all(np.diff(env.bounds) > 0)
    other = switching(seed=1, horizon=1000, changes=3, states=3, actions=2)
    np.testing.assert_array_equal(env.bounds, other.bounds)  # one batch, one set of switch times
    manual = sum(
        np.abs(env.r[i + 1] - env.r[i]).max() + np.abs(env.p[i + 1] - env.p[i]).sum(-1).max()
        for i in range(3)
    )
    assert env.variation == pytest.approx(manual)
    # J* of each piece equals the best deterministic policy's gain (brute force, 2^3 policies)
    for i in range(4):
        mdp = from_dense("piece", env.p[i], env.r[i])
        best = max(
            policy_gain(mdp, np.array(pi)).min() for pi in itertools.product(range(2), repeat=3)
        )
        assert env.gain[i] == pytest.approx(best, abs=1e-7)


def test_drift_is_smooth_and_returns():
    env = drifting(seed=1, horizon=2000, changes=2, states=3, actions=2, drift_pieces=40)
    steps = np.abs(np.diff(env.r, axis=0)).max(axis=(1, 2))
    assert steps.max() < 0.2  # small steps, no jumps
    assert np.abs(env.r[0] - env.r[-1]).max() < 0.05  # two full cycles end where they began


def test_restarting_every_step_is_a_uniform_policy():
    # H = 1 resets theta before every action, so actions follow the uniform policy, exactly as an
    # agent whose actor never moves (alpha = 0): same random numbers, same trajectory, same regret.
    env = switching(seed=2, horizon=300, changes=1, states=3, actions=2)
    kw = {"horizon": 300, "seed": 5}
    restarted = run_batch([env], np.array([0]), np.array([[1.0, 0.5, 0.1]]), **kw)
    frozen = run_batch([env], np.array([0]), np.array([[np.inf, 0.0, 0.1]]), **kw)
    learner = run_batch([env], np.array([0]), np.array([[np.inf, 0.5, 0.1]]), **kw)
    assert restarted.regret[0] == pytest.approx(frozen.regret[0])
    assert learner.regret[0] != pytest.approx(frozen.regret[0])


def test_restart_period_resets_learning():
    # A learner restarted every 50 steps never gets the head start of one that keeps learning on
    # a stationary MDP, so it collects less reward over many seeds.
    env = switching(seed=3, horizon=3000, changes=0, states=3, actions=2)
    cfgs = np.array([[50.0, 0.5, 0.1]] * 8 + [[np.inf, 0.5, 0.1]] * 8)
    res = run_batch([env], np.zeros(16, dtype=int), cfgs, horizon=3000, seed=1)
    assert res.reward[8:].mean() > res.reward[:8].mean()


def test_exp3_finds_the_best_arm_and_its_probabilities_are_a_distribution():
    rng = np.random.default_rng(0)
    bandit = Exp3(3, Exp3.rate(3, 3000), np.random.default_rng(1))
    means = [0.2, 0.5, 0.8]
    picks = []
    for _ in range(3000):
        arm = bandit.pick()
        picks.append(arm)
        bandit.update(arm, float(rng.random() < means[arm]))
        assert bandit.probs().sum() == pytest.approx(1.0)
        assert bandit.probs().min() >= bandit.gamma / 3 - 1e-12
    assert np.bincount(picks[-1000:], minlength=3).argmax() == 2
    assert Exp3.rate(10, 1) == 1.0


def test_quick_path_writes_the_report(tmp_path):
    cfg = NSNACConfig(
        horizons="400,800", tune_seeds=1, restart_divisors="8,2", alphas="0.3", betas="0.1"
    )
    report = run_job("ns-nac", cfg, tmp_path, seeds=2, quick=False, progress=False)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert {c["id"] for c in on_disk["claims"]} == {
        "sublinear_regret", "restarts_beat_no_restarts", "borl_close_to_tuned",
    }  # fmt: skip
    assert report["results"]["switches"][0]["T"] == 400
    assert len(on_disk["results"]["drift"][1]["borl"]["regret"]) == 2
    assert (tmp_path / "regret_vs_T.png").stat().st_size > 0

"""The replay environment: recorded lengths and scores, truncation, clamping to the budget."""

from __future__ import annotations

import numpy as np
import pytest

from budget_controller import baselines as bl
from budget_controller.data import Problems, SolverData
from budget_controller.env import ReplayEnv
from budget_controller.evaluate import frontier_tokens, with_budget
from budget_controller.features import NUM_SCALARS, encode


def test_problems_are_topics_from_one_split(data: SolverData) -> None:
    p = data.sample_problems("test", 200, np.random.default_rng(0))
    assert p.questions.shape == (200, data.cfg.max_turns)
    for row, t in zip(p.questions, p.num_turns, strict=True):
        q = row[:t]
        assert np.all(q >= 0) and np.all(row[t:] == -1) and len(set(q)) == t
        assert set(data.split[q]) == {"test"} and len(set(data.category[q])) == 1
    assert data.cfg.min_turns <= p.num_turns.min() and p.num_turns.max() <= data.cfg.max_turns


def test_budgets_truncate_and_the_total_never_exceeds_B(env: ReplayEnv, data: SolverData) -> None:
    p = with_budget(data.sample_problems("test", 500, np.random.default_rng(1)), 60.0)
    need, corr = env.needed(p)
    # Ask for exactly the recorded length: nothing is cut unless B runs out.
    out = env.rollout(
        Problems(p.questions, p.num_turns, np.full(500, 1e9, np.float32), p.solver),
        lambda s, t: need[:, t],
    )
    active = p.questions >= 0
    np.testing.assert_allclose(out.used, need)
    np.testing.assert_array_equal(out.solved, (corr * active + ~active).prod(axis=1))
    np.testing.assert_array_equal(out.turn_correct, (corr > 0.5) & active)
    np.testing.assert_allclose(
        out.turn_accuracy, ((corr > 0.5) & active).sum(axis=1) / active.sum(axis=1)
    )
    # One token short on the first turn: the turn is cut, the problem fails, tokens = the budget.
    short = env.rollout(p, lambda s, t: need[:, t] - (t == 0))
    assert np.all(short.solved == 0) and not short.turn_correct[:, 0].any()
    # ... but the later turns still count, turn by turn
    later = (short.turn_correct[:, 1:] == out.turn_correct[:, 1:]) | (
        short.granted[:, 1:] < need[:, 1:]
    )
    assert later.all() and short.turn_correct[:, 1:].sum() > 0
    assert np.all(short.tokens <= p.budget + 1e-6)
    # A greedy allocator never gets more than what is left.
    greedy = env.rollout(p, lambda s, t: np.full(len(p), 1e6, np.float32))
    assert np.all(greedy.tokens <= p.budget + 1e-6)
    before = np.cumsum(greedy.used, axis=1) - greedy.used  # tokens spent before each turn
    assert np.all(greedy.granted <= p.budget[:, None] - before + 1e-6)


def test_baselines_order_as_expected(env: ReplayEnv, data: SolverData) -> None:
    p = with_budget(
        data.sample_problems("test", 2000, np.random.default_rng(2)), 2 * data.median_length
    )
    res = {
        name: env.rollout(p, alloc)
        for name, alloc in [
            ("static", bl.static(p)),
            ("oracle", bl.oracle(p, env)),
            ("oracle_turn", bl.oracle_turn(p, env)),
            ("difficulty", bl.difficulty(p, env)),
        ]
    }
    # the per-turn oracle finishes the most turns B allows (a superset of static's and the
    # whole-problem oracle's finished turns, so at least as many correct ones)
    need, _ = env.needed(p)
    finished = {k: ((r.used >= need) & r.active).sum(axis=1) for k, r in res.items()}
    for other in ("static", "oracle", "difficulty"):
        assert np.all(finished["oracle_turn"] >= finished[other])
    for other in ("static", "oracle"):
        assert res["oracle_turn"].turn_correct.sum() >= res[other].turn_correct.sum()
    assert np.all(res["oracle_turn"].tokens <= p.budget + 1e-6)
    free = env.rollout(bl.unbounded(p), bl.no_budget(p))
    # the oracle solves everything feasible, with fewer tokens than static
    assert res["oracle"].solved.mean() >= res["static"].solved.mean()
    assert res["oracle"].tokens.mean() < res["static"].tokens.mean()
    assert free.solved.mean() >= res["oracle"].solved.mean()
    assert free.tokens.mean() > res["static"].tokens.mean()
    assert np.all(res["difficulty"].tokens <= p.budget + 1e-6)


def test_state_features_see_history_and_future_only_when_allowed(
    env: ReplayEnv, data: SolverData
) -> None:
    p = data.sample_problems("val", 64, np.random.default_rng(3))
    z = np.zeros(64, dtype=np.float32)
    s0 = env.state(p, 0, used=z, any_trunc=z, last_trunc=z)
    s1 = env.state(p, 1, used=z + 10, any_trunc=z, last_trunc=z)
    emb, scal = encode(env.spec, s0, all_subq=False)
    assert emb.shape == (64, 3, 384) and scal.shape == (64, NUM_SCALARS)
    assert np.all(emb[:, 1] == 0) and np.all(emb[:, 2] == 0)  # no past at turn 0, no future
    emb1, _ = encode(env.spec, s1, all_subq=False)
    np.testing.assert_allclose(emb1[:, 1], data.embeddings[p.questions[:, 0]], atol=1e-6)
    emb_all, scal_all = encode(env.spec, s0, all_subq=True)
    assert np.abs(emb_all[:, 2]).sum() > 0 and np.abs(scal_all[:, -5:]).sum() > 0


def test_length_predictor_tracks_recorded_lengths(env: ReplayEnv, data: SolverData) -> None:
    te = data.split == "test"
    log_len, _ = env.spec.predictor.predict(data.embeddings[te])
    r = np.corrcoef(log_len, np.log(data.lengths[te]).mean(axis=1))[0, 1]
    assert r > 0.5


def test_frontier_interpolates_the_monotone_envelope() -> None:
    pts = [(100.0, 0.1), (200.0, 0.3), (300.0, 0.2), (400.0, 0.4)]
    assert frontier_tokens(pts, 0.05) == pytest.approx(50.0)  # from the origin
    assert frontier_tokens(pts, 0.2) == pytest.approx(150.0)
    # (300, 0.2) is below the envelope: it holds 0.3 from 200 tokens on
    assert frontier_tokens(pts, 0.3) == pytest.approx(200.0)
    assert frontier_tokens(pts, 0.35) == pytest.approx(350.0)
    assert frontier_tokens(pts, 0.5) is None

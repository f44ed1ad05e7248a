import numpy as np
import pytest

from training.evaluation.metrics import (
    auroc,
    choose,
    correctness_accuracy,
    fraction_above_hull,
    frontier,
    log_loss,
    normalised_auc,
    routing_accuracy,
    upper_hull,
)

NAN = np.nan


def test_correctness_accuracy_counts_observed_cells_only():
    p = np.array([[0.9, 0.2], [0.6, 0.7]])
    s = np.array([[1.0, 1.0], [0.0, NAN]])
    # cells: (0.9,1) right, (0.2,1) wrong, (0.6,0) wrong; the NaN cell is skipped
    assert correctness_accuracy(p, s) == pytest.approx(1 / 3)


def test_log_loss_by_hand():
    p = np.array([[0.8, 0.25]])
    s = np.array([[1.0, 0.0]])
    assert log_loss(p, s) == pytest.approx(-(np.log(0.8) + np.log(0.75)) / 2)


def test_auroc_by_hand_with_a_tie():
    # positives 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4) (0.9>0.1) (0.4=0.4 -> 1/2) (0.4>0.1)
    p = np.array([[0.9], [0.4], [0.4], [0.1]])
    s = np.array([[1.0], [1.0], [0.0], [0.0]])
    assert auroc(p, s) == pytest.approx(3.5 / 4)


def test_choose_prefers_cheaper_on_ties_and_trades_cost():
    p = np.array([[0.5, 0.5, 0.4]])
    cost = np.array([[2.0, 1.0, 0.0]])
    assert choose(p, cost, 0.0).tolist() == [1]
    assert choose(p, cost, 1.0).tolist() == [2]  # 0.5-2, 0.5-1, 0.4-0 -> the free model


def test_routing_accuracy_uses_the_true_score_of_the_argmax():
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    s = np.array([[0.0, 1.0], [NAN, 1.0]])
    assert routing_accuracy(p, s) == pytest.approx(0.5)


def test_frontier_endpoints_are_best_and_cheapest():
    p = np.array([[0.9, 0.3], [0.9, 0.3]])
    cost_pred = np.array([[1e-3, 1e-5], [1e-3, 1e-5]])
    s = np.array([[1.0, 0.0], [1.0, 1.0]])
    c = np.array([[1e-3, 1e-5], [2e-3, 1e-5]])
    cost, acc = frontier(p, cost_pred, s, c)
    assert (cost[0], acc[0]) == pytest.approx((1.5e-3, 1.0))
    assert (cost[-1], acc[-1]) == pytest.approx((1e-5, 0.5))


def test_normalised_auc_by_hand():
    # (0, 0.5) -> (1, 0.7) -> (3, 0.9): trapezoids 0.6*1 + 0.8*2 = 2.2 over a range of 3
    assert normalised_auc([3, 0, 1], [0.9, 0.5, 0.7]) == pytest.approx(2.2 / 3)
    # duplicate costs are averaged; a single distinct cost gives its accuracy
    assert normalised_auc([1, 1], [0.4, 0.6]) == pytest.approx(0.5)


def test_upper_hull_drops_dominated_and_interior_points():
    cost = [1, 2, 3, 4, 5]
    acc = [0.5, 0.55, 0.8, 0.7, 0.85]
    hc, ha = upper_hull(cost, acc)
    # (2, .55) lies below the chord from (1,.5) to (3,.8); (4,.7) is dominated
    assert hc.tolist() == [1, 3, 5]
    assert ha.tolist() == [0.5, 0.8, 0.85]


def test_fraction_above_hull():
    hc, ha = np.array([1.0, 3.0]), np.array([0.5, 0.8])
    above = fraction_above_hull(np.array([1.0, 3.0]), np.array([0.6, 0.9]), hc, ha)
    assert above["fraction"] == 1.0 and above["min_margin"] > 0
    below = fraction_above_hull(np.array([1.0, 3.0]), np.array([0.4, 0.7]), hc, ha)
    assert below["fraction"] == 0.0


def test_choose_with_default_needs_a_clear_gain():
    from training.evaluation.metrics import choose_with_default, tune_margin

    p = np.array([[0.6, 0.65], [0.6, 0.9]])
    cost = np.zeros_like(p)
    assert choose_with_default(p, cost, 0.0, default=0, margin=0.1).tolist() == [0, 1]
    assert choose_with_default(p, cost, 0.0, default=0, margin=0.0).tolist() == [1, 1]
    # query 0: the default is right; query 1: the other model is right -> margin in (0.05, 0.3]
    s = np.array([[1.0, 0.0], [0.0, 1.0]])
    margin, acc = tune_margin(p, cost, s, default=0)
    assert acc == 1.0 and 0.05 <= margin < 0.3


def test_hull_auc_over_a_range():
    from training.evaluation.metrics import hull_auc

    hc, ha = np.array([1.0, 3.0]), np.array([0.5, 0.9])
    # linear from 0.5 to 0.9 on [1, 3] -> mean 0.7; beyond 3 the hull is flat at 0.9
    assert hull_auc(hc, ha, np.array([1.0, 3.0])) == pytest.approx(0.7, abs=1e-3)
    assert hull_auc(hc, ha, np.array([3.0, 5.0])) == pytest.approx(0.9)


def test_common_range_auc_shares_one_scale():
    from training.evaluation.metrics import common_range_auc, pool_cost_range

    # a frontier flat at 0.6 over the whole range scores 0.6
    assert common_range_auc(np.array([1.0, 10.0]), np.array([0.6, 0.6]), 1.0, 10.0) == (
        pytest.approx(0.6)
    )
    # a frontier that only starts at the range's log-midpoint earns nothing below it
    half = common_range_auc(np.array([np.sqrt(10.0), 10.0]), np.array([0.8, 0.8]), 1.0, 10.0)
    assert half == pytest.approx(0.4, abs=0.01)
    # running best: a dearer point with lower accuracy does not pull the frontier down
    best = common_range_auc(np.array([1.0, 10.0]), np.array([0.7, 0.2]), 1.0, 10.0)
    assert best == pytest.approx(0.7)
    # beyond its dearest point the frontier stays flat
    flat = common_range_auc(np.array([1.0, 2.0]), np.array([0.5, 0.5]), 1.0, 100.0)
    assert flat == pytest.approx(0.5)
    costs = np.array([[1.0, 4.0, np.nan], [3.0, 6.0, 2.0]])
    assert pool_cost_range(costs) == (pytest.approx(2.0), pytest.approx(5.0))
    with pytest.raises(ValueError):
        common_range_auc(np.array([1.0]), np.array([0.5]), 2.0, 1.0)

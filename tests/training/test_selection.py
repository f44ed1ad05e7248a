import numpy as np
import pytest

from training.selection import distances, greedy_coverage, k_center, neighbours

# three tight families on a line: {0,1} near 0, {2,3} near 10, {4} at 20
Z = np.array([[0.0], [0.5], [10.0], [10.5], [20.0]], dtype=np.float32)


def test_distances_by_hand():
    D = distances(Z)
    assert D[0, 2] == pytest.approx(10.0) and D[2, 4] == pytest.approx(10.0)
    C = distances(np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32), "cosine")
    assert C[0, 1] == pytest.approx(1.0) and C[0, 0] == pytest.approx(0.0)


def test_neighbours_nearest_first():
    assert neighbours(Z, 2) == [3, 1, 0, 4]
    assert neighbours(Z, 0, k=1) == [1]


def test_k_center_covers_the_families():
    pick = k_center(Z, 3)
    families = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2}
    assert sorted(families[i] for i in pick) == [0, 1, 2]
    with pytest.raises(ValueError):
        k_center(Z, 6)


def test_greedy_coverage_respects_the_budget():
    params = [70.0, 7.0, 70.0, 7.0, 7.0]
    pick = greedy_coverage(Z, budget=21.0, weights=params)
    assert sum(params[i] for i in pick) <= 21.0
    assert sorted(pick) == [1, 3, 4]  # the cheap member of each family

import numpy as np
import pytest

from training.cost import CostModel, query_prompt_tokens
from training.data.matrix import EvalMatrix


def _matrix(cost, pt):
    q, m = cost.shape
    return EvalMatrix(
        dataset="t",
        query_ids=np.array([str(i) for i in range(q)]),
        queries=[""] * q,
        categories=np.array([""] * q),
        split=np.array(["train"] * q),
        embeddings=np.zeros((q, 2), dtype=np.float32),
        models=[f"m{j}" for j in range(m)],
        scores=np.where(np.isnan(cost), np.nan, 1.0).astype(np.float32),
        cost_usd=cost.astype(np.float32),
        prompt_tokens=pt.astype(np.float32),
        completion_tokens=np.zeros_like(cost, dtype=np.float32),
    )


def test_fit_recovers_a_linear_price():
    pt = np.array([[10, 10], [20, 20], [40, 40]], dtype=np.float32)
    cost = np.array([[1.0 + 0.1 * 10, 5.0], [1.0 + 0.1 * 20, 5.0], [1.0 + 0.1 * 40, np.nan]])
    cm = CostModel.fit(_matrix(cost, pt))
    assert cm.intercept[0] == pytest.approx(1.0, rel=1e-5)
    assert cm.per_prompt_token[0] == pytest.approx(0.1, rel=1e-5)
    # a constant-cost model gets slope 0 and its mean
    assert cm.per_prompt_token[1] == pytest.approx(0.0, abs=1e-6)
    assert cm.predict([100])[0, 1] == pytest.approx(5.0)


def test_from_prices_matches_the_price_formula():
    cm = CostModel.from_prices(["a"], [2.0], [8.0], [100.0])
    # 1,000 prompt tokens at $2/Mtok + 100 completion tokens at $8/Mtok
    assert cm.predict([1000])[0, 0] == pytest.approx(0.002 + 0.0008)


def test_query_prompt_tokens_ignores_missing_cells():
    pt = np.array([[5, np.nan], [np.nan, np.nan]], dtype=np.float32)
    assert query_prompt_tokens(_matrix(np.ones((2, 2)), pt)).tolist() == [5.0, 0.0]


def test_a_model_without_costs_is_an_error():
    cost = np.array([[1.0, np.nan]])
    with pytest.raises(ValueError, match="m1"):
        CostModel.fit(_matrix(cost, np.ones((1, 2))))

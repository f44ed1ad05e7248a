"""The paper's partition: one logged model per training query, full-label tests, task skew."""

from __future__ import annotations

import numpy as np
import pytest

from federation.partition import global_test, partition, pooled_train, to_rows
from training.data.load import load_matrix, matrix_from_rows


@pytest.fixture(scope="module")
def rb():
    return load_matrix("routerbench")


def test_partition_covers_every_query_once_with_the_paper_protocol(rb) -> None:
    parts = partition(rb, clients=10, alpha=0.6, seed=3)
    ids = np.concatenate([np.concatenate([p.train.query_ids, p.test.query_ids]) for p in parts])
    assert len(ids) == rb.num_queries and len(set(ids.tolist())) == rb.num_queries
    for p in parts:
        assert (p.train.observed.sum(1) == 1).all()  # one logged model per training query
        n = p.train.num_queries + p.test.num_queries
        assert abs(p.test.num_queries - 0.25 * n) <= 1  # 75/25
        assert p.test.observed.sum() >= rb.observed[np.isin(rb.query_ids, p.test.query_ids)].sum()
        assert np.isclose(p.policy.sum(), 1.0)
    assert global_test(parts).num_queries == sum(p.test.num_queries for p in parts)
    assert pooled_train(parts).observed.sum() == sum(p.train.num_queries for p in parts)


def test_partition_is_deterministic_in_the_seed(rb) -> None:
    a, b = partition(rb, clients=5, seed=1), partition(rb, clients=5, seed=1)
    c = partition(rb, clients=5, seed=2)
    assert all(
        (x.train.query_ids == y.train.query_ids).all()
        and np.array_equal(x.train.scores, y.train.scores, equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )
    assert any(
        len(x.train.query_ids) != len(y.train.query_ids)
        or (x.train.query_ids != y.train.query_ids).any()
        for x, y in zip(a, c, strict=True)
    )


def test_smaller_alpha_concentrates_tasks_and_logging_follows_the_policy() -> None:
    mm = load_matrix("mmlu_pro")

    def mean_tasks(alpha: float) -> float:
        return float(
            np.mean(
                [
                    len(np.unique(p.train.categories))
                    for s in range(3)
                    for p in partition(mm, clients=10, alpha=alpha, seed=s)
                ]
            )
        )

    assert mean_tasks(0.03) < mean_tasks(0.6) - 3  # 14 categories: near all vs a handful
    p = partition(mm, clients=4, alpha=0.6, seed=0)[0]
    logged = p.train.observed.sum(0) / p.train.num_queries
    # The empirical logging frequencies track the client's Dirichlet(0.45) policy.
    assert np.corrcoef(logged, p.policy)[0, 1] > 0.9


def test_client_logs_round_trip_through_the_log_schema(rb, tmp_path) -> None:
    p = partition(rb, clients=4, seed=0)[1]
    rows = to_rows(p.train, client_id="acme")
    assert len(rows) == p.train.num_queries and {r.client_id for r in rows} == {"acme"}
    m = matrix_from_rows(rows)
    assert m.num_queries == p.train.num_queries
    np.testing.assert_allclose(m.embeddings[0], p.train.embeddings[0], rtol=1e-6)

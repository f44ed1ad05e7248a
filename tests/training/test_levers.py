"""Pieces behind the issue-9 levers: cheap query features and the two-data-set LOCUS matrix."""

from __future__ import annotations

import numpy as np

from training.data import load_matrix
from training.evaluation.generalization import stack_matrices
from training.query_features import FEATURES, cheap_features, with_features


def test_cheap_features_mark_code_maths_and_options() -> None:
    texts = [
        "def f(x):\n    return x == 1",
        "Solve 3x + 2 = 11 for x.",
        "Which is a mammal?\nA) trout\nB) whale\nC) crow\nD) newt",
        "hello",
    ]
    F = cheap_features(texts)
    col = {n: i for i, n in enumerate(FEATURES)}
    assert F.shape == (4, len(FEATURES))
    assert F[0, col["code"]] > F[1, col["code"]] and F[0, col["code"]] > F[3, col["code"]]
    assert F[1, col["maths"]] > F[0, col["maths"]] and F[1, col["maths"]] > F[3, col["maths"]]
    assert F[2, col["options"]] >= 0.4 and F[3, col["options"]] == 0.0
    assert F[2, col["log_chars"]] > F[3, col["log_chars"]]
    X = np.ones((4, 3), dtype=np.float32)
    assert np.allclose(with_features(X, texts, 0.5)[:, 3:], 0.5 * F)


def test_stacked_matrix_is_block_diagonal() -> None:
    a = load_matrix("routerbench")
    b = load_matrix("mmlu_pro").subset(np.arange(300))
    s = stack_matrices(a, b)
    qa, ma = a.num_queries, len(a.models)
    assert s.models == a.models + b.models
    assert np.isnan(s.scores[:qa, ma:]).all() and np.isnan(s.scores[qa:, :ma]).all()
    assert np.array_equal(s.scores[:qa, :ma], a.scores, equal_nan=True)
    assert np.array_equal(s.scores[qa:, ma:], b.scores, equal_nan=True)
    assert len(set(s.query_ids.tolist())) == s.num_queries

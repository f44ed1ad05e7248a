"""A synthetic evaluation matrix with item-response structure, for tests and quick experiments.

Queries come from Gaussian task clusters on the unit sphere; models come in families with a skill
vector each; a model answers a query correctly with probability
sigma(theta_m . W phi(x) + b_m - difficulty(x)). The first step of a CPU reproduction of
the LOCUS paper (arXiv 2601.21082).

Usage::

    m = synthetic_matrix(num_models=12, num_queries=600, dim=16, seed=0)
"""

from __future__ import annotations

import numpy as np

from training.data.matrix import EvalMatrix


def synthetic_matrix(
    *,
    num_models: int = 12,
    num_queries: int = 600,
    dim: int = 16,
    num_tasks: int = 4,
    num_families: int = 3,
    skill_dim: int = 4,
    num_unseen: int = 2,
    missing_frac: float = 0.0,
    seed: int = 0,
) -> EvalMatrix:
    """An :class:`EvalMatrix` with 70/10/20 train/val/test splits and seen/unseen models."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_tasks, dim))
    task = rng.integers(num_tasks, size=num_queries)
    X = centres[task] + 0.5 * rng.normal(size=(num_queries, dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W = rng.normal(size=(skill_dim, dim)) * 2.0
    difficulty = X @ rng.normal(size=dim) + 0.5 * rng.normal(size=num_queries)
    family = rng.integers(num_families, size=num_models)
    family_skill = rng.normal(size=(num_families, skill_dim))
    theta = family_skill[family] + 0.3 * rng.normal(size=(num_models, skill_dim))
    bias = 0.5 * rng.normal(size=num_models)
    logits = (X @ W.T) @ theta.T + bias[None, :] - difficulty[:, None]  # [Q, M]
    scores = (rng.random(logits.shape) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    if missing_frac > 0:
        scores[rng.random(scores.shape) < missing_frac] = np.nan
    split = np.full(num_queries, "train", dtype="<U5")
    order = rng.permutation(num_queries)
    n_test, n_val = round(0.2 * num_queries), round(0.1 * num_queries)
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_val]] = "val"
    models = [f"synth-{family[j]}-{j:02d}" for j in range(num_models)]
    cost = np.where(np.isnan(scores), np.nan, 1e-3).astype(np.float32)
    return EvalMatrix(
        dataset="synthetic",
        query_ids=np.array([f"q{i:05d}" for i in range(num_queries)], dtype=str),
        queries=[""] * num_queries,
        categories=np.array([f"task{t}" for t in task], dtype=str),
        split=split,
        embeddings=X.astype(np.float32),
        models=models,
        scores=scores,
        cost_usd=cost,
        prompt_tokens=cost.copy(),
        completion_tokens=cost.copy(),
        meta={
            "seen_models": models[: num_models - num_unseen],
            "unseen_models": models[num_models - num_unseen :],
            "family": family.tolist(),
        },
    )

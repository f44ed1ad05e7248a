"""Embed every model of a matrix from its evaluations and measure predictions on another split.

Usage::

    Z = embed_models(embedder, train)                  # [M, d], from ALL of each model's evals
    metrics = evaluate_predictions(embedder.predict(Z, test.embeddings), test.scores)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from training.data.matrix import EvalMatrix
from training.evaluation.metrics import (
    best_single_accuracy,
    correctness_accuracy,
    log_loss,
    oracle_accuracy,
    routing_accuracy_observed,
)
from training.locus.infer import LocusEmbedder


def embed_models(embedder: LocusEmbedder, matrix: EvalMatrix) -> npt.NDArray[np.float32]:
    """[M, d]: each model of ``matrix`` embedded from all of its observed evaluations."""
    observed = matrix.observed
    return embedder.embed_many(
        (matrix.embeddings[observed[:, j]], matrix.scores[observed[:, j], j])
        for j in range(len(matrix.models))
    )


def evaluate_predictions(
    p: npt.NDArray[np.floating], scores: npt.NDArray[np.floating]
) -> dict[str, float]:
    """Correctness accuracy / BCE over observed cells, routing accuracy and its reference points."""
    return {
        "acc": correctness_accuracy(p, scores),
        "bce": log_loss(p, scores),
        "route": routing_accuracy_observed(p, scores),
        "best_single": best_single_accuracy(scores),
        "oracle": oracle_accuracy(scores),
    }

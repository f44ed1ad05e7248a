"""LOCUS: model embeddings from evaluation sets (arXiv 2601.21082), and the MF baseline it beats.

Usage::

    from training.locus import LocusConfig, LocusEmbedder, train_locus
    result = train_locus(matrix, LocusConfig(), checkpoint_path="locus.pt")
    emb = LocusEmbedder.from_checkpoint("locus.pt")
    p = emb.predict(np.stack([emb.embed(X_m, y_m) for X_m, y_m in evals]), X_queries)
"""

from training.locus.config import LocusConfig
from training.locus.infer import LocusEmbedder
from training.locus.mf import MFConfig, MFResult, fit_model_embedding, train_mf
from training.locus.train import TrainResult, train_locus

__all__ = [
    "LocusConfig",
    "LocusEmbedder",
    "MFConfig",
    "MFResult",
    "TrainResult",
    "fit_model_embedding",
    "train_locus",
    "train_mf",
]

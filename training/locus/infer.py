"""Inference with a trained LOCUS model: embed a model from its evaluations, score queries.

Checkpoints are ``training.checkpoint``'s one format with ``kind`` "locus" and one extra,
``routing`` (the routing method and parameters the gateway uses with it);
:meth:`LocusEmbedder.from_checkpoint` rebuilds the :class:`LocusConfig` first, then the one
:class:`LocusModel` class that training also uses.

Usage::

    emb = LocusEmbedder.from_checkpoint("training/artifacts/default/locus.pt")
    z = emb.embed(X_evals, y_evals)                 # [d]: one forward pass, deterministic
    p = emb.predict(np.stack([z, z2]), X_queries)   # [B, 2] P(correct)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from training.checkpoint import load_checkpoint, save_checkpoint
from training.locus.config import LocusConfig
from training.locus.model import CorrectnessPredictor, LocusModel

CHECKPOINT_KIND = "locus"
# Queries scored per block in `score`: keeps the [block, M * h] hidden activations in cache.
_SCORE_BLOCK = 512

Array = npt.NDArray[np.float32]


def _as_tensor(a: npt.ArrayLike, *, ndim: int, name: str) -> Tensor:
    t = torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return t


@torch.inference_mode()
def score(predictor: CorrectnessPredictor, Z: Tensor, X: Tensor) -> Tensor:
    """Logits [B, M] of every query x in X [B, D] for every model embedding in Z [M, d].

    Equal (up to float rounding) to ``predictor(Z[None], X[:, None])``, but the z-side of the
    first layer is folded once per call: with W = [W_z | W_u | W_zu],
    W [z, u, z*u] + b = (W_z z + b) + (W_u + W_zu diag(z)) u, so each model is a bias a_m [h]
    and a matrix V_m [h, d], and the whole pool is one [B, d] x [d, M h] matmul.
    """
    m, d = Z.shape
    w = predictor.hidden.weight  # [h, 3d]
    h = w.shape[0]
    w_z, w_u, w_zu = w[:, :d], w[:, d : 2 * d], w[:, 2 * d :]
    a = (Z @ w_z.T + predictor.hidden.bias).reshape(m * h)  # [M h]
    v = (w_u[None] + w_zu[None] * Z[:, None, :]).reshape(m * h, d).T.contiguous()  # [d, M h]
    w_out = predictor.out.weight.reshape(h)  # [h]
    b_out = predictor.out.bias
    u = predictor.query_proj(X)  # [B, d]
    out = torch.empty(X.shape[0], m)
    for s in range(0, X.shape[0], _SCORE_BLOCK):
        hidden = torch.addmm(a, u[s : s + _SCORE_BLOCK], v).relu_()  # [b, M h]
        out[s : s + _SCORE_BLOCK] = hidden.view(-1, m, h) @ w_out + b_out  # [b, M]
    return out


class LocusEmbedder:
    """A trained LOCUS model in eval mode: embeds models and predicts P(correct).

    Usage: ``LocusEmbedder.from_checkpoint(path).embed(X, y)``.
    """

    def __init__(
        self,
        model: LocusModel,
        *,
        step: int = 0,
        metrics: dict[str, float] | None = None,
        routing: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval()
        self.step = step
        self.metrics = dict(metrics or {})
        # How the gateway routes with this checkpoint, e.g. {"method": "locus_kr", "params":
        # {...}} (training/routers/locus_kr.py); empty = plain LOCUS predictions.
        self.routing = dict(routing or {})

    @property
    def config(self) -> LocusConfig:
        return self.model.config

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> LocusEmbedder:
        ckpt = load_checkpoint(path, kind=CHECKPOINT_KIND, what="a LOCUS checkpoint")
        cfg = LocusConfig(**ckpt["config"])
        model = LocusModel(cfg)
        model.load_state_dict(ckpt["state_dict"])
        return cls(
            model,
            step=int(ckpt["step"]),
            metrics=dict(ckpt["metrics"]),
            routing=dict(ckpt.get("routing") or {}),
        )

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(
            path,
            kind=CHECKPOINT_KIND,
            config=asdict(self.config),
            state_dict=self.model.state_dict(),
            step=self.step,
            metrics=self.metrics,
            routing=self.routing,
        )

    @torch.inference_mode()
    def embed(self, X: npt.ArrayLike, y: npt.ArrayLike) -> Array:
        """One model's embedding [d] from its evaluations: X [n, D] query encodings, y [n] scores.

        One forward pass over the whole set (any n >= 1); repeated calls are bitwise identical.
        """
        x = _as_tensor(X, ndim=2, name="X")
        s = _as_tensor(y, ndim=1, name="y")
        if x.shape[0] == 0 or x.shape[0] != s.shape[0]:
            raise ValueError(
                f"need n >= 1 evaluations with one score each, got X {tuple(x.shape)}, y {tuple(s.shape)}"
            )
        if x.shape[1] != self.config.input_dim:
            raise ValueError(
                f"X has {x.shape[1]} features, the model expects {self.config.input_dim}"
            )
        if torch.isnan(s).any() or ((s < 0) | (s > 1)).any():
            raise ValueError("scores must be in [0, 1] with no NaN (drop unevaluated queries)")
        z = self.model.encoder(x[None], s[None])  # [1, d]
        return z[0].numpy().copy()

    def embed_many(self, sets: Iterable[tuple[npt.ArrayLike, npt.ArrayLike]]) -> Array:
        """Embeddings [k, d] of k models, each given as (X [n_i, D], y [n_i]); same as ``embed``."""
        rows = [self.embed(X, y) for X, y in sets]
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(rows)

    def predict(self, Z: npt.ArrayLike, X: npt.ArrayLike) -> Array:
        """P(correct) [B, M] of the models embedded in Z [M, d] on the queries X [B, D]."""
        z = _as_tensor(Z, ndim=2, name="Z")
        x = _as_tensor(X, ndim=2, name="X")
        if z.shape[1] != self.dim or x.shape[1] != self.config.input_dim:
            raise ValueError(
                f"Z must be [M, {self.dim}] and X [B, {self.config.input_dim}], "
                f"got {tuple(z.shape)} and {tuple(x.shape)}"
            )
        return torch.sigmoid(score(self.model.predictor, z, x)).numpy()

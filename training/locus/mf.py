"""EmbedLLM-style matrix-factorisation baseline: free per-model embeddings learned by backprop.

It shares :class:`CorrectnessPredictor` with LOCUS, so the two differ only in where z comes from:
a lookup table trained jointly with the predictor here, one encoder forward pass in LOCUS. A new
model gets its embedding from :func:`fit_model_embedding`, an optimisation over its k evaluations
with the predictor frozen.

Usage::

    mf = train_mf(matrix, MFConfig())
    p = mf.predict(X_queries)                                    # [B, M]
    z_new = fit_model_embedding(mf.predictor, X_k, y_k, init=mf.embeddings.mean(0))
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from training.data.matrix import EvalMatrix
from training.locus.config import LocusConfig
from training.locus.evaluate import evaluate_predictions
from training.locus.infer import score
from training.locus.model import CorrectnessPredictor
from training.minilm import EMBED_DIM

Array = npt.NDArray[np.float32]


@dataclass
class MFConfig:
    """Knobs of the MF baseline; the predictor sizes match :class:`LocusConfig`'s defaults."""

    input_dim: int = field(default=EMBED_DIM, metadata={"help": "query encoding size"})
    d_model: int = field(default=128, metadata={"help": "model-embedding size d"})
    predictor_hidden: int = field(default=64, metadata={"help": "hidden width of the MLP"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the predictor"})
    lr: float = field(default=8e-4, metadata={"help": "AdamW lr of the predictor"})
    embedding_lr: float = field(default=8e-3, metadata={"help": "Adam lr of the free embeddings"})
    weight_decay: float = field(default=5e-2, metadata={"help": "AdamW weight decay (predictor)"})
    embedding_l2: float = field(
        default=1e-4, metadata={"help": "L2 penalty on the free embeddings (mean over a batch)"}
    )
    query_noise_std: float = field(
        default=0.0, metadata={"help": "Gaussian noise std on query encodings (EmbedLLM: none)"}
    )
    batch_size: int = field(default=2048, metadata={"help": "(model, query) pairs per step"})
    steps: int = field(default=3000, metadata={"help": "optimisation steps"})
    eval_every: int = field(default=250, metadata={"help": "validate every N steps"})
    seed: int = field(default=42, metadata={"help": "seed for init, batches and dropout"})
    train_split: str = field(default="train", metadata={"help": "split to fit on"})
    val_split: str = field(default="val", metadata={"help": "split for best-on-val selection"})

    def __post_init__(self) -> None:
        for name in (
            "input_dim",
            "d_model",
            "predictor_hidden",
            "batch_size",
            "steps",
            "eval_every",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"MFConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MFConfig.dropout must be in [0, 1), got {self.dropout}")
        if min(self.lr, self.embedding_lr) <= 0:
            raise ValueError("MFConfig learning rates must be positive")
        if min(self.weight_decay, self.embedding_l2, self.query_noise_std) < 0:
            raise ValueError("MFConfig.weight_decay, embedding_l2 and query_noise_std must be >= 0")

    def predictor_config(self) -> LocusConfig:
        """The LocusConfig that sizes the shared predictor class."""
        return LocusConfig(
            input_dim=self.input_dim,
            d_model=self.d_model,
            num_heads=1,
            predictor_hidden=self.predictor_hidden,
            dropout=self.dropout,
        )


@dataclass
class MFResult:
    """Best-on-val predictor (eval mode) and embeddings [M, d] of ``models``."""

    predictor: CorrectnessPredictor
    embeddings: Array
    models: list[str]
    history: list[dict[str, float]]
    best_step: int
    metrics: dict[str, float]
    seconds: float

    def predict(self, X: npt.ArrayLike, Z: npt.ArrayLike | None = None) -> Array:
        """P(correct) [B, M] on X [B, D]; Z [M, d] defaults to the trained embeddings."""
        z = torch.as_tensor(np.asarray(self.embeddings if Z is None else Z, dtype=np.float32))
        x = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))
        return torch.sigmoid(score(self.predictor, z, x)).numpy()


def train_mf(
    matrix: EvalMatrix,
    cfg: MFConfig,
    *,
    models: Sequence[str] | None = None,
    progress: bool = True,
) -> MFResult:
    """Fit free embeddings and the predictor on ``cfg.train_split`` (default: seen models)."""
    if models is None:
        seen = matrix.meta.get("seen_models")
        models = [str(m) for m in seen] if isinstance(seen, list) else list(matrix.models)
    names = list(models)
    matrix = matrix.select_models(names)
    train, val = matrix.for_split(cfg.train_split), matrix.for_split(cfg.val_split)
    q_idx, m_idx = np.nonzero(train.observed)
    X = torch.from_numpy(np.ascontiguousarray(train.embeddings))  # [Q, D]
    y_all = torch.from_numpy(train.scores[q_idx, m_idx])  # [P]
    q_all, m_all = torch.from_numpy(q_idx), torch.from_numpy(m_idx)

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    predictor = CorrectnessPredictor(cfg.predictor_config())
    table = nn.Embedding(len(names), cfg.d_model)
    nn.init.normal_(table.weight, std=0.1)
    opt_pred = torch.optim.AdamW(predictor.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    opt_emb = torch.optim.Adam(table.parameters(), lr=cfg.embedding_lr)

    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, float], dict[str, Tensor], Tensor] | None = None
    start = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(range(1, cfg.steps + 1), desc="mf", disable=not progress, mininterval=1.0)
    for step in bar:
        predictor.train()
        pick = torch.randint(len(y_all), (cfg.batch_size,), generator=gen)
        x = X[q_all[pick]]
        if cfg.query_noise_std > 0:
            x = x + cfg.query_noise_std * torch.randn(x.shape, generator=gen)
        z = table(m_all[pick])  # [b, d]
        logits = predictor(z, x)  # [b]
        loss = F.binary_cross_entropy_with_logits(logits, y_all[pick])
        loss = loss + cfg.embedding_l2 * z.pow(2).sum(-1).mean()
        opt_pred.zero_grad(set_to_none=True)
        opt_emb.zero_grad(set_to_none=True)
        loss.backward()
        opt_pred.step()
        opt_emb.step()
        losses.append(loss.item())
        if step % cfg.eval_every == 0 or step == cfg.steps:
            predictor.eval()
            Z = table.weight.detach()
            p = torch.sigmoid(score(predictor, Z, torch.from_numpy(val.embeddings))).numpy()
            metrics = evaluate_predictions(p, val.scores)
            metrics.update(step=float(step), loss=float(np.mean(losses[-cfg.eval_every :])))
            history.append(metrics)
            if best is None or metrics["acc"] > best[0]:
                best = (
                    metrics["acc"],
                    step,
                    metrics,
                    copy.deepcopy(predictor.state_dict()),
                    Z.clone(),
                )
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", val_acc=f"{metrics['acc']:.4f}")
    bar.close()
    assert best is not None
    _, best_step, best_metrics, state, Z = best
    predictor.load_state_dict(state)
    predictor.eval()
    prefixed = {f"val_{k}": v for k, v in best_metrics.items() if k not in ("step", "loss")}
    return MFResult(
        predictor,
        Z.numpy().copy(),
        names,
        history,
        best_step,
        prefixed,
        time.perf_counter() - start,
    )


def fit_model_embedding(
    predictor: CorrectnessPredictor,
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    steps: int = 300,
    lr: float = 0.05,
    l2: float = 1e-3,
    init: npt.ArrayLike | None = None,
) -> Array:
    """A free embedding [d] for a NEW model from its k evaluations, the predictor frozen.

    Full-batch Adam on BCE + ``l2`` * ||z||^2, starting from ``init`` (default zeros). This is
    the onboarding path of MF baselines; LOCUS instead embeds with one encoder forward pass.
    """
    x = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))
    target = torch.as_tensor(np.asarray(y, dtype=np.float32))
    if x.ndim != 2 or target.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(
            f"need X [k, D] and y [k] with k >= 1, got {tuple(x.shape)} and {tuple(target.shape)}"
        )
    d = predictor.query_proj.out_features
    z0 = np.zeros(d, dtype=np.float32) if init is None else np.asarray(init, dtype=np.float32)
    z = torch.tensor(z0.reshape(d), requires_grad=True)
    was_training = predictor.training
    predictor.eval()
    frozen = [p.requires_grad for p in predictor.parameters()]
    for p in predictor.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            u = predictor.query_proj(x)  # [k, d]: constant while z is fitted
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            logits = predictor.head(z, u)  # [k]
            loss = F.binary_cross_entropy_with_logits(logits, target) + l2 * z.pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p, flag in zip(predictor.parameters(), frozen, strict=True):
            p.requires_grad_(flag)
        predictor.train(was_training)
    return z.detach().numpy().copy()

"""The LOCUS training loop: episodes of (encoder set, disjoint target batch) per model, BCE.

Each step draws ``models_per_step`` models. For each, a random encoder subset S_enc of its
train-split evaluations is embedded into z, and z predicts a disjoint target batch S_dec of its
other evaluations. Every ``eval_every`` steps every model is embedded from ALL its train
evaluations (as at inference) and correctness accuracy is measured on the validation split; the
best-on-val weights are kept.

Usage::

    result = train_locus(load_matrix("mmlu_pro"), LocusConfig(), checkpoint_path=path)
    result.model, result.history.val[-1]["acc"]
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from training.data.matrix import EvalMatrix
from training.locus.config import LocusConfig
from training.locus.evaluate import embed_models, evaluate_predictions
from training.locus.infer import LocusEmbedder
from training.locus.model import LocusModel

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Episode:
    """One model's share of a step: row indices of its encoder set and its target batch."""

    model: int
    enc_rows: IntArray
    dec_rows: IntArray


@dataclass
class History:
    """Per-step training loss and noise std; one dict of validation metrics per validation."""

    loss: list[float] = field(default_factory=list)
    noise_std: list[float] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)


@dataclass
class TrainResult:
    """The best-on-val model (eval mode), its step and metrics, and the training history."""

    model: LocusModel
    history: History
    best_step: int
    metrics: dict[str, float]
    seconds: float

    def embedder(self) -> LocusEmbedder:
        return LocusEmbedder(self.model, step=self.best_step, metrics=self.metrics)


def noise_std(cfg: LocusConfig, step: int) -> float:
    """Cosine anneal from ``noise_std_start`` to ``noise_std_end`` over the anneal window."""
    horizon = max(1, round(cfg.noise_anneal_frac * cfg.steps))
    t = min(step / horizon, 1.0)
    return cfg.noise_std_end + 0.5 * (cfg.noise_std_start - cfg.noise_std_end) * (
        1 + math.cos(math.pi * t)
    )


def lr_factor(cfg: LocusConfig, step: int) -> float:
    """Linear warm-up to 1, then a cosine decay to ``lr_final_frac`` at the last step."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr_final_frac + 0.5 * (1 - cfg.lr_final_frac) * (1 + math.cos(math.pi * min(t, 1.0)))


def sample_episodes(
    rng: np.random.Generator,
    observed_rows: Sequence[IntArray],
    models: IntArray,
    *,
    enc_size: int,
    target_size: int,
) -> list[Episode]:
    """Disjoint encoder/target rows for each model, drawn from one permutation of its rows.

    A model with fewer than ``enc_size + target_size`` evaluations keeps at least one target
    and gives the encoder what is left (at least one).
    """
    episodes = []
    for m in models:
        rows = observed_rows[int(m)]
        n = len(rows)
        if n < 2:
            raise ValueError(f"model {int(m)} has {n} evaluations; LOCUS needs at least 2")
        target = min(target_size, max(1, n - enc_size))
        enc = min(enc_size, n - target)
        perm = rng.permutation(rows)
        episodes.append(Episode(int(m), perm[:enc], perm[enc : enc + target]))
    return episodes


def _pad(
    X: Tensor, Y: Tensor, episodes: Sequence[Episode], *, enc: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Stack per-model rows into x [B, N, D], y [B, N] and a mask [B, N] (None if unpadded)."""
    rows = [e.enc_rows if enc else e.dec_rows for e in episodes]
    n = max(len(r) for r in rows)
    x = X.new_zeros(len(rows), n, X.shape[1])
    y = X.new_zeros(len(rows), n)
    mask = torch.zeros(len(rows), n, dtype=torch.bool)
    for i, (r, e) in enumerate(zip(rows, episodes, strict=True)):
        idx = torch.from_numpy(r)
        x[i, : len(r)] = X[idx]
        y[i, : len(r)] = Y[idx, e.model]
        mask[i, : len(r)] = True
    return x, y, None if bool(mask.all()) else mask


def _resolve_models(matrix: EvalMatrix, models: Sequence[str] | None) -> list[str]:
    if models is not None:
        return list(models)
    seen = matrix.meta.get("seen_models")
    return [str(m) for m in seen] if isinstance(seen, list) else list(matrix.models)


def validate(model: LocusModel, train: EvalMatrix, val: EvalMatrix) -> dict[str, float]:
    """Embed each model from all its train evaluations; metrics of its predictions on ``val``."""
    was_training = model.training
    embedder = LocusEmbedder(model)
    Z = embed_models(embedder, train)
    metrics = evaluate_predictions(embedder.predict(Z, val.embeddings), val.scores)
    model.train(was_training)
    return metrics


def train_locus(
    matrix: EvalMatrix,
    cfg: LocusConfig,
    *,
    models: Sequence[str] | None = None,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train LOCUS on ``cfg.train_split`` of ``models`` (default: ``meta["seen_models"]``).

    Reproducible for a fixed ``cfg.seed`` and thread count. The returned model holds the
    best-on-val weights; with ``checkpoint_path`` they are also saved there in the
    self-describing checkpoint format of :mod:`training.locus.infer`.
    """
    names = _resolve_models(matrix, models)
    matrix = matrix.select_models(names)
    train, val = matrix.for_split(cfg.train_split), matrix.for_split(cfg.val_split)
    if train.num_queries == 0 or val.num_queries == 0:
        raise ValueError(
            f"{matrix.dataset} needs non-empty {cfg.train_split!r} and {cfg.val_split!r} splits"
        )
    if train.embeddings.shape[1] != cfg.input_dim:
        raise ValueError(
            f"embeddings have {train.embeddings.shape[1]} features, cfg.input_dim={cfg.input_dim}"
        )
    observed = train.observed
    observed_rows = [np.flatnonzero(observed[:, j]).astype(np.int64) for j in range(len(names))]
    X = torch.from_numpy(np.ascontiguousarray(train.embeddings))  # [Q, D]
    Y = torch.from_numpy(np.nan_to_num(train.scores, nan=0.0))  # [Q, M]

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    noise_gen = torch.Generator().manual_seed(cfg.seed)
    model = LocusModel(cfg)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": cfg.lr_encoder},
            {"params": model.predictor.parameters(), "lr": cfg.lr_decoder},
        ],
        weight_decay=cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s))
    # The averaged weights are what validation sees and what the checkpoint keeps.
    ema = copy.deepcopy(model) if cfg.ema_decay > 0 else model

    history = History()
    best: tuple[float, int, dict[str, float], dict[str, Tensor]] | None = None
    since_best = 0
    start = time.perf_counter()
    bar = tqdm(range(1, cfg.steps + 1), desc="locus", disable=not progress, mininterval=1.0)
    for step in bar:
        model.train()
        batch = rng.choice(
            len(names), cfg.models_per_step, replace=cfg.models_per_step > len(names)
        )
        enc_size = int(rng.integers(cfg.enc_set_min, cfg.enc_set_max + 1))
        episodes = sample_episodes(
            rng, observed_rows, batch, enc_size=enc_size, target_size=cfg.target_batch_size
        )
        x_enc, y_enc, enc_mask = _pad(X, Y, episodes, enc=True)  # [B, N, D], [B, N]
        x_dec, y_dec, dec_mask = _pad(X, Y, episodes, enc=False)  # [B, T, D], [B, T]
        std = noise_std(cfg, step - 1)
        if std > 0:
            x_enc = x_enc + std * torch.randn(x_enc.shape, generator=noise_gen)
            x_dec = x_dec + std * torch.randn(x_dec.shape, generator=noise_gen)
        logits = model(x_enc, y_enc, enc_mask, x_dec)  # [B, T]
        losses = F.binary_cross_entropy_with_logits(logits, y_dec, reduction="none")
        loss = losses.mean() if dec_mask is None else losses[dec_mask].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not model:
            # Warm-up of the decay (as in TF's ExponentialMovingAverage) so early averages are
            # not dominated by the random init.
            decay = min(cfg.ema_decay, step / (step + 10))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1.0 - decay)
        history.loss.append(loss.item())
        history.noise_std.append(std)

        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics = validate(ema, train, val)
            metrics["step"] = float(step)
            metrics["seconds"] = time.perf_counter() - start
            history.val.append(metrics)
            if best is None or metrics["acc"] > best[0]:
                state = copy.deepcopy(ema.state_dict())
                best = (metrics["acc"], step, metrics, state)
                since_best = 0
            else:
                since_best += 1
            bar.set_postfix(
                loss=f"{np.mean(history.loss[-cfg.eval_every :]):.4f}",
                val_acc=f"{metrics['acc']:.4f}",
            )
            if cfg.patience and since_best >= cfg.patience:
                break
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(history.loss[-10:]):.4f}")
    bar.close()

    assert best is not None  # the last step always validates
    _, best_step, best_metrics, state = best
    model.load_state_dict(state)
    model.eval()
    prefixed = {f"val_{k}": v for k, v in best_metrics.items() if k not in ("step", "seconds")}
    result = TrainResult(model, history, best_step, prefixed, time.perf_counter() - start)
    if checkpoint_path is not None:
        result.embedder().save(checkpoint_path)
    return result

"""Train LOCUS and the MF baseline on MMLU-Pro's seen models, measure both, save the artifact.

Protocol (the LOCUS paper, arXiv 2601.21082): train on the train split of the 18 seen models, select
on the val split, report on the test split. At evaluation each model is embedded from ALL its
train-split evaluations. The 4 unseen models never enter training; they are embedded (LOCUS: one
forward pass; MF: a fitted free embedding with the predictor frozen) from k of their train-split
evaluations and scored on the test split.

Usage::

    python -m training.locus.experiment --out training/locus/artifacts
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from training.config_cli import add_dataclass_args, dataclass_from_args
from training.data import EvalMatrix, load_matrix
from training.locus.config import LocusConfig
from training.locus.evaluate import embed_models, evaluate_predictions
from training.locus.infer import LocusEmbedder
from training.locus.mf import MFConfig, MFResult, fit_model_embedding, train_mf
from training.locus.train import train_locus

log = logging.getLogger(__name__)

ONBOARD_K = (128, 512)


def scoring_latency_ms(
    embedder: LocusEmbedder, Z: npt.ArrayLike, X: npt.ArrayLike, *, repeats: int = 30
) -> dict[str, float]:
    """Median and best wall time (ms) of ``embedder.predict(Z, X)`` after warm-up."""
    for _ in range(3):
        embedder.predict(Z, X)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embedder.predict(Z, X)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": float(np.median(times)), "min_ms": float(np.min(times))}


def _first_k(matrix: EvalMatrix, j: int, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """k of model j's observed evaluations drawn at random (seeded by j and k; all if k is None).

    Rows are stored sorted by question id, so a prefix would take one category only (k = 128 and
    512 used to be business questions only).
    """
    rows = np.flatnonzero(matrix.observed[:, j])
    if k is not None and k < len(rows):
        rows = np.sort(np.random.default_rng([j, k]).choice(rows, size=k, replace=False))
    return matrix.embeddings[rows], matrix.scores[rows, j]


def _onboarding(
    matrix: EvalMatrix,
    unseen: list[str],
    embed: Any,
    predict: Any,
) -> dict[str, dict[str, float]]:
    """Test metrics of unseen models embedded from k of their train evaluations."""
    train = matrix.for_split("train").select_models(unseen)
    test = matrix.for_split("test").select_models(unseen)
    out = {}
    for k in (*ONBOARD_K, None):
        Z = np.stack([embed(*_first_k(train, j, k)) for j in range(len(unseen))])
        metrics = evaluate_predictions(predict(Z, test.embeddings), test.scores)
        out["all" if k is None else str(k)] = {"acc": metrics["acc"], "bce": metrics["bce"]}
    return out


def run(
    matrix: EvalMatrix,
    cfg: LocusConfig,
    mf_cfg: MFConfig,
    *,
    out_dir: Path | None,
    progress: bool = True,
    with_mf: bool = True,
) -> dict[str, Any]:
    seen = _names(matrix, "seen_models") or list(matrix.models)
    unseen = _names(matrix, "unseen_models")
    splits = {s: matrix.select_models(seen).for_split(s) for s in ("train", "val", "test")}
    report: dict[str, Any] = {
        "dataset": matrix.dataset,
        "seen_models": seen,
        "unseen_models": unseen,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "reference_test": {
            k: evaluate_predictions(np.zeros_like(splits["test"].scores), splits["test"].scores)[k]
            for k in ("best_single", "oracle")
        },
    }

    result = train_locus(matrix, cfg, models=seen, progress=progress)
    emb = result.embedder()
    start = time.perf_counter()
    Z = embed_models(emb, splits["train"])
    embed_seconds = time.perf_counter() - start
    locus: dict[str, Any] = {
        "train_seconds": result.seconds,
        "best_step": result.best_step,
        "embed_all_seen_seconds": embed_seconds,
        **{
            s: evaluate_predictions(emb.predict(Z, splits[s].embeddings), splits[s].scores)
            for s in ("val", "test")
        },
        "val_curve": result.history.val,
    }
    if unseen:
        locus["onboarding_test"] = _onboarding(matrix, unseen, emb.embed, emb.predict)
    all_models = matrix.for_split("train")
    Z_all = embed_models(emb, all_models)
    X_lat = matrix.embeddings[:4096]
    locus[f"scoring_4096x{len(Z_all)}"] = scoring_latency_ms(emb, Z_all, X_lat)
    report["locus"] = locus
    log.info("LOCUS val %s test %s", _short(locus["val"]), _short(locus["test"]))

    if with_mf:
        mf = train_mf(matrix, mf_cfg, models=seen, progress=progress)
        report["mf"] = _mf_report(mf, matrix, splits, unseen)
        log.info("MF val %s test %s", _short(report["mf"]["val"]), _short(report["mf"]["test"]))

    if out_dir is not None:
        emb.metrics = {
            **{f"val_{k}": float(v) for k, v in locus["val"].items()},
            **{f"test_{k}": float(v) for k, v in locus["test"].items()},
            "train_seconds": float(result.seconds),
        }
        emb.save(out_dir / "locus_mmlu_pro.pt")
        report["config"] = _config_dict(cfg)
        report["mf_config"] = _config_dict(mf_cfg)
        (out_dir / "locus_mmlu_pro.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _mf_report(
    mf: MFResult, matrix: EvalMatrix, splits: dict[str, EvalMatrix], unseen: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "train_seconds": mf.seconds,
        "best_step": mf.best_step,
        **{
            s: evaluate_predictions(mf.predict(splits[s].embeddings), splits[s].scores)
            for s in ("val", "test")
        },
    }
    if unseen:
        init = mf.embeddings.mean(0)
        out["onboarding_test"] = _onboarding(
            matrix,
            unseen,
            lambda X, y: fit_model_embedding(mf.predictor, X, y, init=init),
            lambda Z, X: mf.predict(X, Z),
        )
    return out


def _names(matrix: EvalMatrix, key: str) -> list[str]:
    value = matrix.meta.get(key, [])
    return [str(m) for m in value] if isinstance(value, list) else []


def _short(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={metrics[k]:.4f}" for k in ("acc", "bce", "route"))


def _config_dict(cfg: object) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(cfg)  # type: ignore[call-overload]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mmlu_pro")
    parser.add_argument("--out", type=Path, default=None, help="folder for the .pt and .json")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-mf", action="store_true", help="skip the MF baseline")
    add_dataclass_args(parser, LocusConfig)
    add_dataclass_args(parser, MFConfig, prefix="mf_")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    report = run(
        load_matrix(args.dataset),
        dataclass_from_args(LocusConfig, args),
        dataclass_from_args(MFConfig, args, prefix="mf_"),
        out_dir=args.out,
        with_mf=not args.no_mf,
    )
    log.info("%s", json.dumps({k: v for k, v in report["locus"].items() if k != "val_curve"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

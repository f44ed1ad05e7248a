"""How much query-level routing signal is there at all? Leave-models-out routing with ALL evidence.

``junction eval generalization`` onboards each held-out model from k <= 512 evaluations. This
asks the ceiling question behind its MMLU-Pro figures: if every held-out model were onboarded
from ALL of its train-split evaluations (8,423 on MMLU-Pro), how far above the best-average pick
could a per-model predictor on the query representation route the test questions? Same folds and
pools as the benchmark (held-out models only); hyper-parameters chosen on the validation split.

Methods (per held-out model, fitted on all its train evaluations):

- ``best_avg``: the model with the highest train accuracy (every query);
- ``category``: per-category train accuracy (the benchmark's per-category ceiling);
- ``knn``: mean score of the K nearest train questions (cosine), K on validation;
- ``ridge``: ridge regression on the query representation, lambda on validation;
- ``category+ridge``: category mean + ridge on the residual.

Each is run on MiniLM alone and on MiniLM + the cheap features of ``training.query_features``
(scale on validation), so the same table says whether those features carry routing signal.

Usage::

    junction eval full-evidence --datasets mmlu_pro,routerbench --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.data import EvalMatrix, load_matrix

log = logging.getLogger(__name__)
Array = npt.NDArray[np.float32]

KNN_GRID = (10, 20, 50, 100, 200)
RIDGE_GRID = (1.0, 10.0, 100.0, 1000.0)
FEATURE_SCALES = (0.0, 0.3, 1.0)
FOLDS = {"mmlu_pro": 5, "routerbench": 4}


def _unit(X: Array) -> Array:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _ridge_fit(X: Array, y: Array, lam: float) -> tuple[Array, Array, float]:
    mu = X.mean(0)
    Xc = (X - mu).astype(np.float64)
    w = np.linalg.solve(Xc.T @ Xc + lam * np.eye(X.shape[1]), Xc.T @ (y - y.mean()))
    return mu, w.astype(np.float32), float(y.mean())


def _category_means(cats_tr: npt.NDArray[np.str_], y: Array, cats_q: npt.NDArray[np.str_]) -> Array:
    mean = float(y.mean())
    table = {c: float(y[cats_tr == c].mean()) for c in np.unique(cats_tr)}
    return np.array([table.get(c, mean) for c in cats_q], dtype=np.float32)


def neighbours(X_tr: Array, Xq: Array, k: int) -> npt.NDArray[np.int64]:
    """[Q, k] indices of each query's k most similar train questions (cosine), nearest first."""
    sims = _unit(Xq) @ _unit(X_tr).T
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, idx, 1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, 1).astype(np.int64)


def predictions(
    X_tr: Array,
    y: Array,
    cats_tr: npt.NDArray[np.str_],
    Xq: Array,
    cats_q: npt.NDArray[np.str_],
    order: npt.NDArray[np.int64],
) -> dict[str, Array]:
    """Every method x hyper-parameter's P(correct) [Q] for one model (``order``: neighbours)."""
    out: dict[str, Array] = {"best_avg": np.full(len(Xq), y.mean(), dtype=np.float32)}
    cat = _category_means(cats_tr, y, cats_q)
    out["category"] = cat
    for K in KNN_GRID:
        out[f"knn|{K}"] = y[order[:, :K]].mean(1).astype(np.float32)
    resid = y - _category_means(cats_tr, y, cats_tr)
    for lam in RIDGE_GRID:
        mu, w, b = _ridge_fit(X_tr, y, lam)
        out[f"ridge|{lam}"] = (b + (Xq - mu) @ w).astype(np.float32)
        mu, w, b = _ridge_fit(X_tr, resid, lam)
        out[f"category+ridge|{lam}"] = (cat + b + (Xq - mu) @ w).astype(np.float32)
    return out


def route(P: Array, T: Array) -> float:
    return float(np.nan_to_num(T[np.arange(len(P)), P.argmax(1)]).mean())


def run(datasets: list[str], seed: int = 0) -> dict[str, Any]:
    from training.evaluation.generalization import model_folds
    from training.query_features import with_features

    report: dict[str, Any] = {"seed": seed, "grids": {"knn": KNN_GRID, "ridge": RIDGE_GRID,
                              "feature_scales": FEATURE_SCALES}, "datasets": {}}  # fmt: skip
    for ds in datasets:
        m: EvalMatrix = load_matrix(ds)
        rows = {s: np.flatnonzero(m.split == s) for s in ("train", "val", "test")}
        res: dict[str, Any] = {"folds": {}}
        for f, held in enumerate(model_folds(m.models, FOLDS.get(ds, 4), seed)):
            fold: dict[str, Any] = {"held": [m.models[j] for j in held]}
            T_val, T_te = m.scores[rows["val"]][:, held], m.scores[rows["test"]][:, held]
            for scale in FEATURE_SCALES:
                X = m.embeddings if scale == 0 else with_features(m.embeddings, m.queries, scale)
                per: dict[str, list[dict[str, Array]]] = {"val": [], "test": []}
                nn: dict[tuple[bytes, str], npt.NDArray[np.int64]] = {}
                for j in held:
                    tr = rows["train"][~np.isnan(m.scores[rows["train"], j])]
                    y = m.scores[tr, j].astype(np.float32)
                    for split in ("val", "test"):
                        q = rows[split]
                        key = (tr.tobytes(), split)
                        if key not in nn:  # models evaluated on the same questions share them
                            nn[key] = neighbours(X[tr], X[q], max(KNN_GRID))
                        per[split].append(
                            predictions(X[tr], y, m.categories[tr], X[q], m.categories[q], nn[key])
                        )
                val = {k: route(np.stack([p[k] for p in per["val"]], 1), T_val)
                       for k in per["val"][0]}  # fmt: skip
                test = {k: route(np.stack([p[k] for p in per["test"]], 1), T_te)
                        for k in per["test"][0]}  # fmt: skip
                fold[f"scale={scale}"] = {"val": val, "test": test}
            fold["best_single_test"] = float(np.nan_to_num(T_te).mean(0).max())
            fold["oracle_test"] = float(np.nan_to_num(T_te).max(1).mean())
            res["folds"][f"models-{f}"] = fold
            log.info("%s fold %d done", ds, f)
        res["summary"] = summarise(res["folds"])
        report["datasets"][ds] = res
    return report


def summarise(folds: dict[str, Any]) -> dict[str, Any]:
    """Per method family: test accuracy (mean over folds) of the config best on validation."""
    out: dict[str, Any] = {}
    scales = [k for k in next(iter(folds.values())) if k.startswith("scale=")]
    for sc in scales:
        fams: dict[str, list[float]] = {}
        for fold in folds.values():
            v, t = fold[sc]["val"], fold[sc]["test"]
            for fam in {k.split("|")[0] for k in v}:
                keys = [k for k in v if k.split("|")[0] == fam]
                best = max(keys, key=lambda k: v[k])
                fams.setdefault(fam, []).append(t[best])
        out[sc] = {fam: float(np.mean(a)) for fam, a in sorted(fams.items())}
    out["best_single_test"] = float(np.mean([f["best_single_test"] for f in folds.values()]))
    out["oracle_test"] = float(np.mean([f["oracle_test"] for f in folds.values()]))
    return out


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = run([d.strip() for d in args.datasets.split(",") if d.strip()], args.seed)
    (out / "full_evidence.json").write_text(json.dumps(report, indent=1) + "\n")
    for ds, r in report["datasets"].items():
        sys.stdout.write(f"{ds} {json.dumps(r['summary'], indent=1)}\n")
    return 0


def register_full_evidence(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "full-evidence", help="leave-models-out routing with ALL of each model's evaluations"
    )
    p.add_argument("--datasets", default="mmlu_pro,routerbench")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(handler=_run)

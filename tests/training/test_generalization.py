"""The generalisation benchmark: its protocol pieces and an end-to-end quick run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.evaluation.generalization import (
    GenConfig,
    apgr,
    draw_rows,
    model_folds,
    run_generalization,
)
from training.routers.locus_kr import Evidence, KRParams, decide, kr_predict, unit


def test_model_folds_hold_out_every_model_once() -> None:
    folds = model_folds([f"m{i}" for i in range(22)], 5, seed=0)
    flat = sorted(j for f in folds for j in f)
    assert flat == list(range(22))
    assert {len(f) for f in folds} <= {4, 5}


def test_draws_are_random_seeded_and_not_the_first_rows() -> None:
    rows = np.arange(1000, 9000)
    a = draw_rows(rows, 128, 0, 7, 128, 0, 3)
    assert np.array_equal(a, draw_rows(rows, 128, 0, 7, 128, 0, 3))
    assert not np.array_equal(a, draw_rows(rows, 128, 0, 7, 128, 1, 3))
    assert not np.array_equal(a, rows[:128])
    assert a.max() > 5000  # spread over the rows, not a prefix


def test_apgr_of_perfect_random_and_reversed_rankings() -> None:
    rng = np.random.default_rng(0)
    y_s = (rng.random(4000) < 0.7).astype(np.float32)
    y_w = (rng.random(4000) < 0.4).astype(np.float32)
    perfect = apgr(y_s - y_w, y_s, y_w, seed=0)
    rand = apgr(np.zeros(4000, dtype=np.float32), y_s, y_w, seed=0)
    rev = apgr(y_w - y_s, y_s, y_w, seed=0)
    assert perfect["apgr"] > 0.8 and perfect["cpt50"] < 0.3
    assert abs(rand["apgr"] - 0.5) < 0.05
    assert rev["apgr"] < 0.3


def test_kernel_residual_moves_towards_neighbours_and_shrinks_without_them() -> None:
    rng = np.random.default_rng(1)
    X = unit(rng.normal(size=(200, 16)).astype(np.float32))
    y = (X[:, 0] > 0).astype(np.float32)  # right exactly where the first coordinate is positive
    prior_own = np.full(200, 0.5, dtype=np.float32)
    ev = Evidence.build(X, y, prior_own)
    q = unit(np.eye(16, dtype=np.float32)[[0]] * 1.0 + 0.01)
    near = kr_predict(
        ev, np.array([0.5], dtype=np.float32), KRParams(k=10, beta=10.0, alpha=0.1), X=q
    )
    assert near[0] > 0.7
    far = kr_predict(
        ev,
        np.array([0.5], dtype=np.float32),
        KRParams(k=10, beta=10.0, alpha=1e6, alpha_g=1e6),
        X=q,
    )
    assert abs(far[0] - 0.5) < 1e-3  # huge shrinkage: the prior comes back


def test_decide_with_a_large_margin_is_the_best_average_pick() -> None:
    p = np.array([[0.9, 0.2], [0.1, 0.8]], dtype=np.float32)
    zero = np.zeros_like(p)
    assert decide(p, zero, 0.0, 0, 1.0).tolist() == [0, 0]
    assert decide(p, zero, 0.0, 0, 0.0).tolist() == [0, 1]


def test_quick_run_writes_report_summary_and_plots(tmp_path: Path) -> None:
    cfg = GenConfig(out=str(tmp_path), datasets="routerbench", task_folds=0, quick=True)
    report = run_generalization(cfg)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["method"] == "locus_kr"
    kinds = report["datasets"]["routerbench"]["kinds"]["models"]
    held = kinds["routing"]["held/16"]
    for name in ("locus_kr", "locus", "mf", "knn", "ridge", "best_avg"):
        assert 0.0 <= held[name]["accuracy"]["mean"] <= 1.0
    assert held["ref"]["oracle"]["mean"] >= held["ref"]["best_single"]["mean"]
    # every model of the quick slice is held out in exactly one fold
    folds = report["datasets"]["routerbench"]["folds"]
    held_names = sorted(m for f in folds.values() for m in f["held"])
    assert held_names == sorted(report["datasets"]["routerbench"]["models"])
    assert (tmp_path / "summary.md").read_text().startswith("# Generalisation benchmark")
    assert (tmp_path / "routerbench_accuracy_vs_k_held.png").exists()

"""``junction eval generalization``: routing on models and tasks the router has never seen.

Protocol (everything seeded; written into ``report.json``):

- **Leave-models-out.** The models of a data set are split into folds (every model is held out
  exactly once). For each fold, LOCUS and the MF baseline are trained on the other models only
  (train split; best-on-val checkpoint on the val split). Each held-out model is then onboarded
  from k of its train-split evaluations (k in ``ks``, ``draws`` seeded random draws each); each
  seen model is represented by 512 of its train-split evaluations, as in the shipped bundle. Test-split questions are routed among the
  held-out models ("held" pool) and among held-out plus seen models ("all" pool).
- **Leave-tasks-out.** Folds over tasks (MMLU-Pro categories, RouterBench tasks): LOCUS and MF
  are trained on the other tasks' train questions, every model is onboarded from k = 128 of its
  evaluations on those tasks, and the held-out tasks' test questions are routed.
- **Hyper-parameters** (kNN's k, ridge's lambda, LOCUS-KR's (K, beta, alpha, alpha_g, margin))
  are chosen for fold f by validation-split routing accuracy on the OTHER folds' held-out models
  (each predicted by its own fold's networks), so fold f's models and every test question stay
  out of every choice.
- **Methods** on the same evaluations: LOCUS-KR (the method the gateway serves, see
  ``training/routers/locus_kr.py``) and its ablations, LOCUS alone, MF (free embedding fitted
  with the predictor frozen), per-model kNN and ridge regression on the query embedding, and the
  best-average pick (the model whose evaluations score highest); plus the true best single model
  and the oracle on the test questions.
- **Costs**: every method uses the same per-query cost estimate, the mean cost of each model's 20
  evaluations nearest to the query. Frontier AUCs use ``metrics.common_range_auc`` over the
  pool's common cost range (``metrics.pool_cost_range`` of the test costs).
- **Strong/weak pairs**: pairs of held-out models of one fold whose train-split accuracies differ
  by at least 5 points; queries ranked by p(strong) - p(weak); RouteLLM's APGR (area under the
  performance-gap-recovered curve over the share of calls to the strong model) and CPT(50%)
  (share of calls needed to recover half the gap).

Usage::

    junction eval generalization --out training/evaluation/results/generalization
    junction eval generalization --quick --out /tmp/gen      # tiny, for tests
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from training.data import EvalMatrix, load_matrix
from training.evaluation import metrics as mt
from training.minilm import EMBED_DIM
from training.routers.locus_kr import (
    Evidence,
    KRParams,
    apply_calibration,
    calibrate_prior,
    decide_dnh,
    evidence_weight,
    global_offset,
    kernel_residual,
    penalise,
    prediction_sd,
    sorted_neighbours,
    unit,
    utility_default,
)

log = logging.getLogger(__name__)
Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

KS = (16, 32, 64, 128, 256, 512)
K_MAX = 64  # neighbours precomputed per query (largest K of any grid below)
COST_K = 20  # neighbours behind every method's per-query cost estimate
# Evaluations a seen (pool) model is represented by, as in the shipped bundle (training/jobs.py).
SEEN_EVIDENCE = 512

KNN_GRID = (5, 10, 20, 50)
RIDGE_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
KR_GRID = {
    "k": (10, 50),
    "beta": (10.0,),
    "alpha": (0.5, 2.0),
    "alpha_g": (2.0, 20.0),
}
MARGINS = (0.0, 0.02, 0.05, 0.1, 0.15, 1.0)
# blend_kr: prior = (1 - w) * LOCUS + w * MF (the model's MF embedding fitted on its own k
# evaluations), then the same global offset and kernel residual; w = 0 is LOCUS-KR
BLEND_W = (0.25, 0.5, 0.75, 1.0)
# dnh (do no harm with uncertainty, ``locus_kr.decide_dnh``): LOCUS-KR's prediction, a default
# that follows lambda (best evidence mean - lambda x mean cost) and a gain needed of gamma standard
# errors (``locus_kr.prediction_sd``) plus a margin; chosen on validation by lambda-0 accuracy
# ("dnh") or by frontier AUC over the common cost range ("dnh_auc")
DNH_GAMMA = (0.0, 0.025, 0.05, 0.1, 0.2, 0.4)
DNH_MARGINS = (0.0, 0.02)
VAL_LAMBDAS = mt.LAMBDAS[::4]  # the validation frontier (25 of the 100 test lambdas)
# cal_kr: the LOCUS prior calibrated per model, sigmoid(a logit q + b) fitted on its own k
# evaluations with penalty strength c ((a - 1)^2 + b^2), then the same offset and kernel residual
CAL_STRENGTH = (3.0, 30.0)
MF_FIT_STEPS = 150  # Adam steps fitting a new model's MF embedding (predictor frozen)
METHOD = "locus_kr"  # the method the gateway serves


@dataclass
class GenConfig:
    """Knobs of the generalisation benchmark."""

    out: str = field(default="reports/generalization", metadata={"help": "output folder"})
    datasets: str = field(default="mmlu_pro,routerbench", metadata={"help": "comma-separated"})
    model_folds: str = field(
        default="mmlu_pro=5,routerbench=4", metadata={"help": "leave-models-out folds per data set"}
    )
    task_folds: int = field(default=3, metadata={"help": "leave-tasks-out folds (0 = skip)"})
    ks: str = field(default="16,32,64,128,256,512", metadata={"help": "evaluations per new model"})
    draws: int = field(default=3, metadata={"help": "seeded random draws per k"})
    locus_steps: int = field(default=500, metadata={"help": "LOCUS training steps per fold"})
    mf_steps: int = field(default=800, metadata={"help": "MF training steps per fold"})
    seed: int = field(default=0, metadata={"help": "seed of folds and draws"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    cache: str = field(default="cache/generalization", metadata={"help": "trained nets per fold"})
    quick: bool = field(default=False, metadata={"help": "tiny nets, few ks (tests)"})
    merge: str = field(
        default="", metadata={"help": "comma-separated run folders to merge into --out"}
    )
    joint: bool = field(
        default=False,
        metadata={"help": "train LOCUS on both data sets at once (the other's models all seen)"},
    )
    features: float = field(
        default=0.0,
        metadata={"help": "scale of cheap query features appended to MiniLM (0 = none)"},
    )


# --------------------------------------------------------------------------------------------
# folds and the networks trained per fold


@dataclass
class Fold:
    dataset: str
    kind: str  # "models" or "tasks"
    name: str
    held: list[int]  # model columns onboarded from k evaluations
    seen: list[int]  # model columns with all their train evaluations
    train_models: list[int]  # what LOCUS/MF are trained on
    train_rows: IntArray  # rows for training and evidence (train split, allowed tasks)
    val_rows: IntArray
    test_rows: IntArray
    ks: tuple[int, ...]
    nets: dict[str, Any] = field(default_factory=dict)


def model_folds(models: list[str], n: int, seed: int) -> list[list[int]]:
    """Seeded shuffle, then round-robin: every model is held out once; fold sizes differ by <= 1."""
    order = np.random.default_rng(seed).permutation(len(models))
    return [sorted(int(j) for j in order[f::n]) for f in range(n)]


def task_folds(categories: npt.NDArray[np.str_], n: int, seed: int) -> list[list[str]]:
    tasks = sorted(set(categories.tolist()))
    n = min(n, len(tasks))
    order = np.random.default_rng(seed + 1).permutation(len(tasks))
    return [sorted(tasks[int(j)] for j in order[f::n]) for f in range(n)]


def build_folds(m: EvalMatrix, cfg: GenConfig, n_model_folds: int) -> list[Fold]:
    split = m.split
    ks = _ks(cfg)
    rows = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
    all_cols = list(range(len(m.models)))
    folds = []
    for f, held in enumerate(model_folds(m.models, n_model_folds, cfg.seed)):
        seen = [j for j in all_cols if j not in held]
        folds.append(
            Fold(m.dataset, "models", f"models-{f}", held, seen, seen, rows["train"],
                 rows["val"], rows["test"], ks)
        )  # fmt: skip
    if cfg.task_folds > 0:
        for f, tasks in enumerate(task_folds(m.categories, cfg.task_folds, cfg.seed)):
            out = np.isin(m.categories, tasks)
            folds.append(
                Fold(m.dataset, "tasks", f"tasks-{f}:{'+'.join(tasks)}", all_cols, [], all_cols,
                     rows["train"][~out[rows["train"]]], rows["val"][out[rows["val"]]],
                     rows["test"][out[rows["test"]]], (min(128, max(ks)),))
            )  # fmt: skip
    return folds


def _ks(cfg: GenConfig) -> tuple[int, ...]:
    return (16, 64) if cfg.quick else tuple(int(k) for k in cfg.ks.split(","))


def locus_fold_config(cfg: GenConfig, input_dim: int = EMBED_DIM) -> Any:
    from training.locus import LocusConfig

    if cfg.quick:
        return LocusConfig(
            input_dim=input_dim, d_model=16, num_latents=4, num_heads=2, predictor_hidden=16, steps=30, eval_every=15,
            models_per_step=4, enc_set_min=8, enc_set_max=64, target_batch_size=32, warmup_steps=5,
        )  # fmt: skip
    # Smaller than the shipped model so that every fold trains in a few CPU minutes; encoder sets
    # span the onboarding range (16..512 evaluations).
    return LocusConfig(
        input_dim=input_dim, d_model=64, num_latents=16, num_heads=4, predictor_hidden=64, steps=cfg.locus_steps,
        eval_every=max(1, cfg.locus_steps // 4), models_per_step=8, enc_set_min=16,
        enc_set_max=512, target_batch_size=128, warmup_steps=50,
    )  # fmt: skip


def mf_fold_config(cfg: GenConfig, input_dim: int = EMBED_DIM) -> Any:
    from training.locus import MFConfig

    if cfg.quick:
        return MFConfig(
            input_dim=input_dim,
            d_model=16,
            predictor_hidden=16,
            steps=30,
            eval_every=15,
            batch_size=256,
        )
    return MFConfig(
        input_dim=input_dim, d_model=64, predictor_hidden=64, steps=cfg.mf_steps,
        eval_every=max(1, cfg.mf_steps // 4), batch_size=2048,
    )  # fmt: skip


def train_fold_nets(
    m: EvalMatrix, fold: Fold, cfg: GenConfig, partner: EvalMatrix | None = None
) -> None:
    """LOCUS and MF trained on the fold's training models and rows (cached on disk).

    With ``partner`` (``--joint``), LOCUS is trained on the fold's matrix and the partner data
    set's train/val questions and models at once, in one model space (MF stays per data set).
    """
    import torch

    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.locus import LocusEmbedder, train_locus, train_mf
    from training.locus.mf import MFResult
    from training.locus.model import CorrectnessPredictor

    dim = int(m.embeddings.shape[1])
    lc, mc = locus_fold_config(cfg, dim), mf_fold_config(cfg, dim)
    names = [m.models[j] for j in fold.train_models]
    # the fold's matrix: training rows (train split) plus its val rows for best-on-val checkpoints
    keep_val = m.split == "val"
    if fold.kind == "tasks":
        keep_val &= ~np.isin(np.arange(m.num_queries), fold.val_rows)
    rows = np.union1d(fold.train_rows, np.flatnonzero(keep_val))
    sub = m.subset(rows)
    locus_names, locus_sub = names, sub
    if partner is not None:
        locus_sub = stack_matrices(sub, partner.subset(np.isin(partner.split, ("train", "val"))))
        locus_names = names + list(partner.models)
    tag: list[Any] = [m.dataset, fold.name, names, asdict(lc), asdict(mc)]
    if cfg.features:
        tag.append(cfg.features)
    key = hashlib.sha256(json.dumps(tag).encode()).hexdigest()[:12]
    folder = Path(cfg.cache) / f"{m.dataset}-{fold.name.split(':')[0]}-{key}"
    locus_path, mf_path = folder / "locus.pt", folder / "mf.pt"
    if partner is not None:  # MF is the same; LOCUS is trained with the partner's models
        locus_path = folder / f"locus-joint-{partner.dataset}.pt"
    t = time.time()
    if locus_path.exists() and not cfg.quick:
        fold.nets["locus"] = LocusEmbedder.from_checkpoint(locus_path)
    else:
        fold.nets["locus"] = train_locus(
            locus_sub, lc, models=locus_names, progress=True
        ).embedder()
        if not cfg.quick:
            fold.nets["locus"].save(locus_path)
    if mf_path.exists() and not cfg.quick:
        blob = load_checkpoint(mf_path)  # caches from before kind "mf_fold" load too
        pred = CorrectnessPredictor(mc.predictor_config())
        pred.load_state_dict(blob["state_dict"])
        pred.eval()
        fold.nets["mf"] = MFResult(pred, blob["embeddings"].numpy(), names, [], 0, {}, 0.0)
    else:
        fold.nets["mf"] = train_mf(sub, mc, models=names, progress=True)
        if not cfg.quick:
            save_checkpoint(
                mf_path,
                kind="mf_fold",
                config=asdict(mc),
                state_dict=fold.nets["mf"].predictor.state_dict(),
                embeddings=torch.from_numpy(fold.nets["mf"].embeddings),
            )
    fold.nets["seconds"] = time.time() - t


def stack_matrices(a: EvalMatrix, b: EvalMatrix) -> EvalMatrix:
    """One matrix of both data sets' questions and models (block-diagonal: a model is NaN on the
    other data set's questions), for training LOCUS in one model space over both."""
    if a.embeddings.shape[1] != b.embeddings.shape[1]:
        raise ValueError("the two data sets' query embeddings differ in size")
    if set(a.models) & set(b.models):
        raise ValueError("the two data sets share model names")
    qa, qb, ma, mb = a.num_queries, b.num_queries, len(a.models), len(b.models)

    def block(x: Array, y: Array) -> Array:
        out = np.full((qa + qb, ma + mb), np.nan, dtype=np.float32)
        out[:qa, :ma], out[qa:, ma:] = x, y
        return out

    return EvalMatrix(
        dataset=f"{a.dataset}+{b.dataset}",
        query_ids=np.concatenate([np.char.add(f"{a.dataset}:", a.query_ids),
                                  np.char.add(f"{b.dataset}:", b.query_ids)]),
        queries=[*a.queries, *b.queries],
        categories=np.concatenate([a.categories, b.categories]),
        split=np.concatenate([a.split, b.split]),
        embeddings=np.concatenate([a.embeddings, b.embeddings]).astype(np.float32),
        models=[*a.models, *b.models],
        scores=block(a.scores, b.scores),
        cost_usd=block(a.cost_usd, b.cost_usd),
        prompt_tokens=block(a.prompt_tokens, b.prompt_tokens),
        completion_tokens=block(a.completion_tokens, b.completion_tokens),
        meta={"stacked": [a.dataset, b.dataset]},
    )  # fmt: skip


def add_features(m: EvalMatrix, scale: float) -> EvalMatrix:
    """The matrix with ``scale`` x the cheap query features beside each embedding."""
    from training.query_features import with_features

    return replace(m, embeddings=with_features(m.embeddings, m.queries, scale))


# --------------------------------------------------------------------------------------------
# per-model predictions of every method


@dataclass
class ModelPred:
    """One model's predictions on one query set, for every method and hyper-parameter."""

    p: dict[str, Array]  # method/config key -> [Q]
    cost: Array  # [Q] predicted cost (shared by every method)
    mean: float  # mean score of its evidence
    mean_cost: float
    sd: dict[str, Array] = field(default_factory=dict)  # locus_kr config key -> [Q] std error


def _kr_keys() -> list[tuple[int, float, float, float]]:
    return list(itertools.product(*KR_GRID.values()))  # type: ignore[arg-type]


def _kr_name(prefix: str, c: tuple[int, float, float, float]) -> str:
    return f"{prefix}|k={c[0]},beta={c[1]},alpha={c[2]},alpha_g={c[3]}"


def _cal_keys() -> list[tuple[float, int, float, float, float]]:
    return [(c, *kr) for c in CAL_STRENGTH for kr in _kr_keys()]


def _cal_name(c: tuple[float, int, float, float, float]) -> str:
    return f"cal_kr|c={c[0]},k={c[1]},beta={c[2]},alpha={c[3]},alpha_g={c[4]}"


def _blend_keys() -> list[tuple[float, int, float, float, float]]:
    return [(w, *c) for w in BLEND_W for c in _kr_keys()]


def _blend_name(c: tuple[float, int, float, float, float]) -> str:
    return f"blend_kr|w={c[0]},k={c[1]},beta={c[2]},alpha={c[3]},alpha_g={c[4]}"


def predict_model(
    m: EvalMatrix,
    fold: Fold,
    j: int,
    ev_rows: IntArray,
    q_rows: IntArray,
    Xq_unit: Array,
    *,
    mf_z: Array,
    configs: dict[str, Any] | None,
) -> ModelPred:
    """Every method's P(correct) for model column j from its evidence rows, on the query rows.

    ``configs`` None = every hyper-parameter of every grid (validation); otherwise only the chosen
    ones (``{"knn": K, "ridge": lam, "locus_kr": (k, beta, alpha, alpha_g), ...}``).
    """
    locus, mf = fold.nets["locus"], fold.nets["mf"]
    ev_rows = ev_rows[~np.isnan(m.scores[ev_rows, j])]
    X_ev, y_ev = m.embeddings[ev_rows], m.scores[ev_rows, j].astype(np.float32)
    c_ev = np.nan_to_num(m.cost_usd[ev_rows, j]).astype(np.float32)
    Xq = m.embeddings[q_rows]
    sims = Xq_unit @ unit(X_ev).T  # [Q, n]
    nn_idx, nn_sim = sorted_neighbours(sims, K_MAX)
    cost = c_ev[nn_idx[:, :COST_K]].mean(1)
    mean = float(y_ev.mean())
    out: dict[str, Array] = {"best_avg": np.full(len(q_rows), mean, dtype=np.float32)}

    z = locus.embed(X_ev, y_ev)
    q_l = locus.predict(z[None], Xq)[:, 0]
    q_own = locus.predict(z[None], X_ev)[:, 0]
    out["locus"] = q_l
    out["mf"] = mf.predict(Xq, mf_z[None])[:, 0]
    mf_own = mf.predict(X_ev, mf_z[None])[:, 0]

    def pick(name: str, grid: Any) -> list[Any]:
        return list(grid) if configs is None else [configs[name]]

    for K in pick("knn", KNN_GRID):
        out[f"knn|{K}"] = y_ev[nn_idx[:, :K]].mean(1)
    for lam in pick("ridge", RIDGE_GRID):
        out[f"ridge|{lam}"] = _ridge(X_ev, y_ev, Xq, lam)
    ev_l = Evidence.build(X_ev, y_ev, q_own)
    ev_c = Evidence.build(X_ev, y_ev, np.full(len(y_ev), mean))
    sd: dict[str, Array] = {}
    for prefix, ev, prior in (("locus_kr", ev_l, q_l), ("mean_kr", ev_c, out["best_avg"])):
        for c in pick(prefix, _kr_keys()):
            k, beta, alpha, alpha_g = c
            g = global_offset(ev.resid, alpha_g)
            r = kernel_residual(nn_idx, nn_sim, ev.resid - g, k=k, beta=beta, alpha=alpha)
            name = _kr_name(prefix, tuple(c))
            out[name] = np.clip(prior + g + r, 0.01, 0.99)
            if prefix == "locus_kr":
                W = evidence_weight(nn_sim, k, beta)
                sd[name] = prediction_sd(out[name], ev.n, W, KRParams(k, beta, alpha, alpha_g))
    if configs is not None:  # the dnh methods' own LOCUS-KR configs (chosen apart from locus_kr)
        for key in ("dnh", "dnh_auc", "dnh_auc_all"):
            if key not in configs:
                continue
            k, beta, alpha, alpha_g = configs[key][:4]
            name = _kr_name("locus_kr", (k, beta, alpha, alpha_g))
            if name not in out:
                g = global_offset(ev_l.resid, alpha_g)
                r = kernel_residual(nn_idx, nn_sim, ev_l.resid - g, k=k, beta=beta, alpha=alpha)
                out[name] = np.clip(q_l + g + r, 0.01, 0.99)
            if name not in sd:
                W = evidence_weight(nn_sim, k, beta)
                sd[name] = prediction_sd(out[name], ev_l.n, W, KRParams(k, beta, alpha, alpha_g))
    cal_cache: dict[float, tuple[Array, Array]] = {}
    for c5 in pick("cal_kr", _cal_keys()):
        strength, k, beta, alpha, alpha_g = c5
        if strength not in cal_cache:
            a, b = calibrate_prior(q_own, y_ev, strength)
            cal_cache[strength] = (apply_calibration(q_l, a, b), apply_calibration(q_own, a, b))
        cq, cq_own = cal_cache[strength]
        resid = y_ev - cq_own
        g = global_offset(resid, alpha_g)
        r = kernel_residual(nn_idx, nn_sim, resid - g, k=int(k), beta=beta, alpha=alpha)
        out[_cal_name(tuple(c5))] = np.clip(cq + g + r, 0.01, 0.99).astype(np.float32)
    for c5 in pick("blend_kr", _blend_keys()):
        w, k, beta, alpha, alpha_g = c5
        prior_q = (1 - w) * q_l + w * out["mf"]
        resid = y_ev - ((1 - w) * q_own + w * mf_own)
        g = global_offset(resid, alpha_g)
        r = kernel_residual(nn_idx, nn_sim, resid - g, k=int(k), beta=beta, alpha=alpha)
        out[_blend_name(tuple(c5))] = np.clip(prior_q + g + r, 0.01, 0.99).astype(np.float32)
    # ens: the plain mean of four predictors' P(correct) (LOCUS, MF, kNN-50, ridge-30), fixed
    # members so the only choice left is the do-no-harm margin
    ens = [q_l, out["mf"], y_ev[nn_idx[:, :50]].mean(1), _ridge(X_ev, y_ev, Xq, 30.0)]
    out["ens"] = np.mean(ens, axis=0).astype(np.float32)
    return ModelPred(out, cost.astype(np.float32), mean, float(c_ev.mean()), sd)


def _ridge(X: Array, y: Array, Xq: Array, lam: float) -> Array:
    """Ridge regression of the score on the query embedding (intercept = mean score)."""
    mu_x = X.mean(0)
    Xc = (X - mu_x).astype(np.float64)
    w = np.linalg.solve(Xc.T @ Xc + lam * np.eye(X.shape[1]), Xc.T @ (y - y.mean()))
    return np.clip(y.mean() + (Xq - mu_x) @ w, 0.0, 1.0).astype(np.float32)


def draw_rows(rows: IntArray, k: int, seed: int, *keys: int) -> IntArray:
    """k rows drawn at random (seeded by the fold, k, draw and model), never the first k."""
    rng = np.random.default_rng([seed, *keys])
    return np.sort(rng.choice(rows, size=min(k, len(rows)), replace=False))


# --------------------------------------------------------------------------------------------
# routing and pair metrics


def route_acc(choice: IntArray, truth: Array) -> float:
    return float(np.nan_to_num(truth[np.arange(len(choice)), choice]).mean())


def method_choice(P: Array, C: Array, means: Array, lam: float, margin: float) -> IntArray:
    """argmax p - lam * cost after the do-no-harm penalty (margin 0: plain argmax)."""
    return mt.choose(penalise(P, means, margin), C, lam)


def apgr(s: Array, y_strong: Array, y_weak: Array, seed: int) -> dict[str, float]:
    """RouteLLM's APGR and CPT(50%): queries sent to the strong model by decreasing score s."""
    n = len(s)
    jitter = np.random.default_rng([seed, 0x5EED]).random(n) * 1e-9  # random tie-breaking
    order = np.argsort(-(s.astype(np.float64) + jitter), kind="stable")
    ys, yw = np.nan_to_num(y_strong[order]), np.nan_to_num(y_weak[order])
    gain = np.concatenate([[0.0], np.cumsum(ys - yw)])  # n+1 points: 0..n calls to strong
    perf = (yw.sum() + gain) / n
    a_w, a_s = perf[0], perf[-1]
    if a_s - a_w <= 0:
        return {"apgr": float("nan"), "cpt50": float("nan")}
    pgr = (perf - a_w) / (a_s - a_w)
    frac = np.arange(n + 1) / n
    reach = np.flatnonzero(pgr >= 0.5)
    return {
        "apgr": float(np.trapezoid(pgr, frac)),
        "cpt50": float(frac[reach[0]]) if len(reach) else 1.0,
    }


# --------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class FoldPreds:
    """Predictions of one fold on one query set: per (k, draw), held models then seen models."""

    held: dict[tuple[int, int], list[ModelPred]]
    seen: list[ModelPred]
    q_truth: Array = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    q_cost: Array = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))


def fold_predictions(
    m: EvalMatrix, fold: Fold, q_rows: IntArray, cfg: GenConfig, configs: dict[str, Any] | None
) -> FoldPreds:
    from training.locus import fit_model_embedding

    Xq_unit = unit(m.embeddings[q_rows])
    mf = fold.nets["mf"]
    init = mf.embeddings.mean(0)
    mf_cache: dict[tuple[int, int, int], Array] = fold.nets.setdefault("mf_z", {})
    held: dict[tuple[int, int], list[ModelPred]] = {}
    for k in fold.ks:
        for d in range(cfg.draws if not cfg.quick else 2):
            preds = []
            for j in fold.held:
                rows = draw_rows(fold.train_rows[~np.isnan(m.scores[fold.train_rows, j])], k,
                                 cfg.seed, hash_name(fold.name), k, d, j)  # fmt: skip
                key = (k, d, j)
                if key not in mf_cache:
                    mf_cache[key] = fit_model_embedding(
                        mf.predictor, m.embeddings[rows], m.scores[rows, j], init=init,
                        steps=MF_FIT_STEPS,
                    )  # fmt: skip
                preds.append(
                    predict_model(m, fold, j, rows, q_rows, Xq_unit, mf_z=mf_cache[key],
                                  configs=configs)
                )  # fmt: skip
            held[(k, d)] = preds
    seen = []
    for j in fold.seen:
        i = fold.train_models.index(j)
        # what the gateway holds for a pool model: SEEN_EVIDENCE of its evaluations (seeded)
        rows = draw_rows(fold.train_rows[~np.isnan(m.scores[fold.train_rows, j])],
                         SEEN_EVIDENCE, cfg.seed, hash_name(fold.name), j)  # fmt: skip
        seen.append(
            predict_model(m, fold, j, rows, q_rows, Xq_unit, mf_z=mf.embeddings[i],
                          configs=configs)
        )  # fmt: skip
    return FoldPreds(held, seen, m.scores[q_rows], m.cost_usd[q_rows])


def hash_name(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def _method_keys(preds: list[ModelPred]) -> list[str]:
    return list(preds[0].p)


def _pools(fold: Fold) -> dict[str, bool]:
    """Pool name -> whether the seen models are in it."""
    return {"held": False} if fold.kind == "tasks" else {"held": False, "all": True}


def validation_scores(m: EvalMatrix, fold: Fold, fp: FoldPreds) -> dict[str, float]:
    """Mean validation routing accuracy at lambda = 0 of every (method, config, margin)."""
    truth = m.scores[fold.val_rows]
    sums: dict[str, list[float]] = {}
    for (_k, _d), held in fp.held.items():
        for _pool, with_seen in _pools(fold).items():
            preds = held + (fp.seen if with_seen else [])
            cols = fold.held + (fold.seen if with_seen else [])
            T = truth[:, cols]
            means = np.array([p.mean for p in preds])
            zero = np.zeros((len(T), len(cols)), dtype=np.float32)
            for key in _method_keys(preds):
                P = np.stack([p.p[key] for p in preds], 1)
                kr_family = key.split("|")[0] in (
                    "locus_kr", "mean_kr", "blend_kr", "ens", "cal_kr"
                )  # fmt: skip
                margins = MARGINS if kr_family else (0.0,)
                for mg in margins:
                    ch = method_choice(P, zero, means, 0.0, mg)
                    sums.setdefault(f"{key}@{mg}", []).append(route_acc(ch, T))
            dnh_validation(fp, preds, cols, sums, with_seen)
    return {k: float(np.mean(v)) for k, v in sums.items()}


def dnh_sweep(
    P: Array, S: Array, C: Array, lams: npt.ArrayLike, defaults: IntArray, gamma: float,
    margin: float,
) -> IntArray:  # fmt: skip
    """``decide_dnh`` at every lambda at once: choices [L, Q] (lambda l with default defaults[l])."""
    lam = np.asarray(lams, dtype=np.float64)[:, None, None]
    d = np.asarray(defaults, dtype=np.int64)
    P64, S64 = P.astype(np.float64), S.astype(np.float64)
    util = P64[None] - lam * C.astype(np.float64)[None]  # [L, Q, M]
    idx = np.broadcast_to(d[:, None, None], (len(d), util.shape[1], 1))
    gain = util - np.take_along_axis(util, idx, axis=2)
    sd_d = S64[:, d].T[:, :, None]  # [L, Q, 1]
    lcb = gain - gamma * np.sqrt(S64[None] ** 2 + sd_d**2) - margin
    np.put_along_axis(lcb, idx, 0.0, axis=2)
    best = lcb.argmax(axis=2)
    top = np.take_along_axis(lcb, best[:, :, None], axis=2)[:, :, 0]
    return np.where(top > 0.0, best, d[:, None]).astype(np.int64)


def choose_sweep(P: Array, C: Array, lams: npt.ArrayLike) -> IntArray:
    """``metrics.choose`` at every lambda at once (ties to the cheaper model): choices [L, Q]."""
    lam = np.asarray(lams, dtype=np.float64)[:, None, None]
    util = P.astype(np.float64)[None] - lam * C.astype(np.float64)[None]
    tied = util >= util.max(axis=2, keepdims=True) - 1e-12
    return np.argmin(np.where(tied, C[None], np.inf), axis=2).astype(np.int64)


def dnh_validation(
    fp: FoldPreds,
    preds: list[ModelPred],
    cols: list[int],
    sums: dict[str, list[float]],
    with_seen: bool = False,
) -> None:
    """Validation figures of every dnh config (LOCUS-KR config x gamma x margin): lambda-0
    routing accuracy under "dnh|...@margin" and frontier AUC over the pool's common cost range
    (``VAL_LAMBDAS``) under "dnhauc|...@margin"; and the served rule's frontier AUC (fixed
    best-average default and margin) under "krauc|...@margin", to compare the two on validation.
    In the pool with seen models the frontier AUCs are also kept apart ("dnhaucall|...@margin",
    "kraucall|...@margin"): the pool a gateway routes in, where the issue's frontier target is."""
    T, Cq = fp.q_truth[:, cols], fp.q_cost[:, cols]
    lo, hi = mt.pool_cost_range(Cq)
    Tn, Cn = np.nan_to_num(T, nan=0.0), np.nan_to_num(Cq, nan=0.0)
    rows = np.arange(len(T))[None, :]
    means = np.array([p.mean for p in preds])
    mcost = np.array([p.mean_cost for p in preds])
    C = np.stack([p.cost for p in preds], 1)
    zero = np.zeros_like(C)
    d0 = utility_default(means, mcost, 0.0)
    defaults = np.array([utility_default(means, mcost, float(lam)) for lam in VAL_LAMBDAS])

    def auc(choices: IntArray) -> float:  # [L, Q] -> frontier AUC (as mt.realised per lambda)
        fa, fc = Tn[rows, choices].mean(1), Cn[rows, choices].mean(1)
        return mt.common_range_auc(fc, fa, lo, hi)

    for key in preds[0].sd:
        P = np.stack([p.p[key] for p in preds], 1)
        S = np.stack([p.sd[key] for p in preds], 1)
        body = key.split("|")[1]
        for gamma, mg in itertools.product(DNH_GAMMA, DNH_MARGINS):
            name = f"{body},gamma={gamma}@{mg}"
            ch0 = decide_dnh(P, S, zero, 0.0, d0, gamma, mg)
            sums.setdefault(f"dnh|{name}", []).append(route_acc(ch0, T))
            a = auc(dnh_sweep(P, S, C, VAL_LAMBDAS, defaults, gamma, mg))
            sums.setdefault(f"dnhauc|{name}", []).append(a)
            if with_seen:
                sums.setdefault(f"dnhaucall|{name}", []).append(a)
        for mg in MARGINS:
            a = auc(choose_sweep(penalise(P, means, mg), C, VAL_LAMBDAS))
            sums.setdefault(f"krauc|{body}@{mg}", []).append(a)
            if with_seen:
                sums.setdefault(f"kraucall|{body}@{mg}", []).append(a)


def select_configs(val: dict[str, dict[str, float]], fold: str) -> dict[str, Any]:
    """For ``fold``: the configs with the best mean validation score over the OTHER folds."""
    others = [v for f, v in val.items() if f != fold] or list(val.values())
    keys = list(others[0])
    mean = {k: float(np.mean([o[k] for o in others])) for k in keys}

    def best(prefix: str) -> tuple[str, float]:
        cands = [k for k in keys if k.split("|")[0].split("@")[0] == prefix]
        top = max(cands, key=lambda k: (mean[k], -len(k)))
        return top, mean[top]

    out: dict[str, Any] = {}
    for prefix in ("knn", "ridge"):
        key, score = best(prefix)
        out[prefix] = float(key.split("|")[1].split("@")[0])
        if prefix == "knn":
            out[prefix] = int(out[prefix])
        out[f"{prefix}_val"] = score
    for prefix in ("locus_kr", "mean_kr"):
        key, score = best(prefix)
        body, mg = key.split("|")[1].split("@")
        vals = dict(kv.split("=") for kv in body.split(","))
        out[prefix] = (int(vals["k"]), float(vals["beta"]), float(vals["alpha"]),
                       float(vals["alpha_g"]))  # fmt: skip
        out[f"{prefix}_margin"] = float(mg)
        out[f"{prefix}_val"] = score
        # the same predictor without the do-no-harm default (ablation)
        out[f"{prefix}_nomargin_val"] = mean[f"{key.split('@')[0]}@0.0"]
        if prefix == "locus_kr" and f"krauc|{body}@{mg}" in mean:  # its validation frontier
            out["locus_kr_val_auc"] = mean[f"krauc|{body}@{mg}"]
            out["locus_kr_val_auc_all"] = mean.get(f"kraucall|{body}@{mg}")
    if any(k.startswith("blend_kr|") for k in keys):
        key, score = best("blend_kr")
        body, mg = key.split("|")[1].split("@")
        vals = dict(kv.split("=") for kv in body.split(","))
        out["blend_kr"] = (float(vals["w"]), int(vals["k"]), float(vals["beta"]),
                           float(vals["alpha"]), float(vals["alpha_g"]))  # fmt: skip
        out["blend_kr_margin"] = float(mg)
        out["blend_kr_val"] = score
    for prefix, name in (("dnh", "dnh"), ("dnhauc", "dnh_auc"), ("dnhaucall", "dnh_auc_all")):
        if any(k.startswith(prefix + "|") for k in keys):
            key, score = best(prefix)
            body, mg = key.split("|")[1].split("@")
            vals = dict(kv.split("=") for kv in body.split(","))
            out[name] = (int(vals["k"]), float(vals["beta"]), float(vals["alpha"]),
                         float(vals["alpha_g"]), float(vals["gamma"]))  # fmt: skip
            out[f"{name}_margin"] = float(mg)
            out[f"{name}_val"] = score
            other = "dnhauc" if prefix == "dnh" else "dnh"  # its figure on the other criterion
            out[f"{name}_val_{'auc' if prefix == 'dnh' else 'acc'}"] = mean[f"{other}|{body}@{mg}"]
            if f"dnhaucall|{body}@{mg}" in mean:
                out[f"{name}_val_auc_all"] = mean[f"dnhaucall|{body}@{mg}"]
    if any(k.startswith("cal_kr|") for k in keys):
        key, score = best("cal_kr")
        body, mg = key.split("|")[1].split("@")
        vals = dict(kv.split("=") for kv in body.split(","))
        out["cal_kr"] = (float(vals["c"]), int(vals["k"]), float(vals["beta"]),
                         float(vals["alpha"]), float(vals["alpha_g"]))  # fmt: skip
        out["cal_kr_margin"] = float(mg)
        out["cal_kr_val"] = score
    if any(k.startswith("ens@") for k in keys):
        key, score = best("ens")
        out["ens_margin"] = float(key.split("@")[1])
        out["ens_val"] = score
    return out


def category_best(m: EvalMatrix, fold: Fold, cols: list[int]) -> float | None:
    """Test accuracy of sending each category (task) to the model best on it over ALL its train
    evaluations: a ceiling for task-level routing that no k-evaluation router is given."""
    if fold.kind != "models":
        return None
    total = 0.0
    cats_tr, cats_te = m.categories[fold.train_rows], m.categories[fold.test_rows]
    for c in np.unique(cats_te):
        tr = m.scores[fold.train_rows[cats_tr == c]][:, cols]
        n = (~np.isnan(tr)).sum(0)
        acc = np.where(n > 0, np.nansum(tr, 0) / np.maximum(n, 1), -1.0)
        b = cols[int(np.argmax(acc))]
        total += float(np.nan_to_num(m.scores[fold.test_rows[cats_te == c], b]).sum())
    return total / len(fold.test_rows)


def test_metrics(
    m: EvalMatrix, fold: Fold, fp: FoldPreds, configs: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Every test metric of the chosen configs for one fold: per (k, draw), per pool, per method."""
    truth = m.scores[fold.test_rows]
    tcost = m.cost_usd[fold.test_rows]
    kr = _kr_name("locus_kr", configs["locus_kr"])
    mk = _kr_name("mean_kr", configs["mean_kr"])
    methods = {
        METHOD: (kr, configs["locus_kr_margin"]),
        "locus_kr_nomargin": (kr, 0.0),
        "mean_kr": (mk, configs["mean_kr_margin"]),
        "blend_kr": (_blend_name(configs["blend_kr"]), configs["blend_kr_margin"]),
        "ens": ("ens", configs.get("ens_margin", 0.0)),
        "cal_kr": (_cal_name(configs["cal_kr"]), configs["cal_kr_margin"]),
        "dnh": (_kr_name("locus_kr", configs["dnh"][:4]), configs["dnh_margin"]),
        "dnh_auc": (_kr_name("locus_kr", configs["dnh_auc"][:4]), configs["dnh_auc_margin"]),
        "dnh_auc_all": (
            _kr_name("locus_kr", configs.get("dnh_auc_all", configs["dnh_auc"])[:4]),
            configs.get("dnh_auc_all_margin", configs["dnh_auc_margin"]),
        ),
        # LOCUS-KR for the onboarded (held-out) models, MF's trained embeddings for the pool's
        # seen models (the held-only pool is LOCUS-KR's): with LOCUS-KR's margin and without
        "kr_mf_seen": (kr, configs["locus_kr_margin"]),
        "kr_mf_seen_nomargin": (kr, 0.0),
        "avg_lam": ("best_avg", 0.0),
        "locus": ("locus", 0.0),
        "mf": ("mf", 0.0),
        "knn": (f"knn|{configs['knn']}", 0.0),
        "ridge": (f"ridge|{configs['ridge']}", 0.0),
        "best_avg": ("best_avg", 0.0),
    }
    gammas = {
        "dnh": configs["dnh"][4],
        "dnh_auc": configs["dnh_auc"][4],
        "dnh_auc_all": configs.get("dnh_auc_all", configs["dnh_auc"])[4],
    }

    def choice(name: str, key: str, mg: float, preds: list[ModelPred], P: Array, C: Array,
               lam: float) -> IntArray:  # fmt: skip
        means = np.array([p.mean for p in preds])
        mcost = np.array([p.mean_cost for p in preds])
        if name in gammas:
            S = np.stack([p.sd[key] for p in preds], 1)
            d = utility_default(means, mcost, lam)
            return decide_dnh(P, S, C, lam, d, gammas[name], mg)
        if name == "avg_lam":  # the best-supported single model at this lambda, every query
            return np.full(len(P), utility_default(means, mcost, lam), dtype=np.int64)
        return method_choice(P, C, means, lam, mg)

    train_acc = {j: float(np.nanmean(m.scores[fold.train_rows, j])) for j in fold.held}
    out: dict[str, Any] = {}
    for (k, d), held in fp.held.items():
        entry: dict[str, Any] = {"pools": {}, "correctness": {}, "pairs": {}}
        # correctness prediction on the held-out models' test cells
        Th = truth[:, fold.held]
        for name, (key, _) in methods.items():
            if name in ("locus_kr_nomargin", "avg_lam") or name.startswith("kr_mf_seen"):
                continue
            P = np.stack([p.p[key] for p in held], 1)
            entry["correctness"][name] = {
                "accuracy": mt.correctness_accuracy(P, Th),
                "auroc": mt.auroc(P, Th),
                "log_loss": mt.log_loss(np.clip(P, 1e-3, 1 - 1e-3), Th),
            }
        for pool, with_seen in _pools(fold).items():
            preds = held + (fp.seen if with_seen else [])
            cols = fold.held + (fold.seen if with_seen else [])
            T, Cq = truth[:, cols], tcost[:, cols]
            C = np.stack([p.cost for p in preds], 1)
            lo, hi = mt.pool_cost_range(Cq)
            singles_c = np.nanmean(Cq, 0)
            singles_a = np.nan_to_num(T).mean(0)
            hc, ha = mt.upper_hull(singles_c, singles_a)
            pe: dict[str, Any] = {
                "models": len(cols),
                "best_single": float(singles_a.max()),
                "category_best": category_best(m, fold, cols),
                "oracle": float(np.nanmax(np.nan_to_num(T, nan=0.0), 1).mean()),
                "hull_auc": mt.common_range_auc(hc, ha, lo, hi),
                "cost_range": [lo, hi],
                "methods": {},
            }
            for name, (key, mg) in methods.items():
                if name.startswith("kr_mf_seen"):  # seen models' columns from MF
                    P = np.stack(
                        [p.p[key] for p in held] + [p.p["mf"] for p in preds[len(held) :]], 1
                    )
                else:
                    P = np.stack([p.p[key] for p in preds], 1)
                ch0 = choice(name, key, mg, preds, P, np.zeros_like(P), 0.0)
                pts = [
                    mt.realised(choice(name, key, mg, preds, P, C, float(lam)), T, Cq)
                    for lam in mt.LAMBDAS
                ]
                fa, fc = np.array([a for a, _ in pts]), np.array([c for _, c in pts])
                above = mt.fraction_above_hull(fc, fa, hc, ha)
                pe["methods"][name] = {
                    "accuracy": route_acc(ch0, T),
                    "frontier_auc": mt.common_range_auc(fc, fa, lo, hi),
                    "above_hull": above["fraction"],
                    "distinct_models": int(len(np.unique(ch0))),
                    "top_share": float(np.bincount(ch0).max() / len(ch0)),
                    "_frontier": (fc.tolist(), fa.tolist()) if (k == 128 and d == 0) else None,
                }
            if k == 128 and d == 0:
                pe["_singles"] = (singles_c.tolist(), singles_a.tolist())
                pe["_hull"] = (hc.tolist(), ha.tolist())
            entry["pools"][pool] = pe
        # strong/weak pairs among the held-out models (>= 5 points apart on the train split)
        if fold.kind == "models":
            for a, b in itertools.combinations(range(len(fold.held)), 2):
                ja, jb = fold.held[a], fold.held[b]
                if abs(train_acc[ja] - train_acc[jb]) < 0.05:
                    continue
                s_i, w_i = (a, b) if train_acc[ja] > train_acc[jb] else (b, a)
                pair = f"{m.models[fold.held[s_i]]} / {m.models[fold.held[w_i]]}"
                res = {}
                for name, (key, _) in methods.items():
                    if name in ("locus_kr_nomargin", "avg_lam") or name.startswith("kr_mf_seen"):
                        continue
                    s = held[s_i].p[key] - held[w_i].p[key]
                    if name in gammas:  # the uncertain side of the gain goes to the default
                        sign = 1.0 if held[s_i].mean >= held[w_i].mean else -1.0
                        sd2 = held[s_i].sd[key] ** 2 + held[w_i].sd[key] ** 2
                        s = s + sign * gammas[name] * np.sqrt(sd2)
                    res[name] = apgr(s, truth[:, fold.held[s_i]], truth[:, fold.held[w_i]],
                                     seed + k + d)  # fmt: skip
                entry["pairs"][pair] = res
        out[f"{k}/{d}"] = entry
    return out


def run_generalization(cfg: GenConfig) -> dict[str, Any]:
    import torch

    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    n_folds = dict(kv.split("=") for kv in cfg.model_folds.split(","))
    report: dict[str, Any] = {
        "config": {**asdict(cfg), "command_args": _command_args(cfg)},
        "method": METHOD,
        "locus_fold_config": asdict(locus_fold_config(cfg)),
        "mf_fold_config": asdict(mf_fold_config(cfg)),
        "grids": {"knn": KNN_GRID, "ridge": RIDGE_GRID, "locus_kr": KR_GRID, "margins": MARGINS},
        "datasets": {},
    }
    for ds in [d.strip() for d in cfg.datasets.split(",") if d.strip()]:
        m = _load(ds, cfg)
        partner = None
        if cfg.joint:  # LOCUS in one model space over both shipped data sets
            partner = _load("routerbench" if ds == "mmlu_pro" else "mmlu_pro", cfg)
        folds = build_folds(m, cfg, int(n_folds.get(ds, 4)) if not cfg.quick else 2)
        for fold in tqdm(folds, desc=f"{ds}: train folds"):
            train_fold_nets(m, fold, cfg, partner)
        res: dict[str, Any] = {"models": m.models, "folds": {}, "kinds": {}}
        for kind in ("models", "tasks"):
            kf = [f for f in folds if f.kind == kind]
            if not kf:
                continue
            val = {}
            for fold in tqdm(kf, desc=f"{ds}: {kind} validation"):
                val[fold.name] = validation_scores(
                    m, fold, fold_predictions(m, fold, fold.val_rows, cfg, None)
                )
            for fold in tqdm(kf, desc=f"{ds}: {kind} test"):
                chosen = select_configs(val, fold.name)
                fp = fold_predictions(m, fold, fold.test_rows, cfg, chosen)
                res["folds"][fold.name] = {
                    "kind": kind,
                    "held": [m.models[j] for j in fold.held],
                    "train_seconds": fold.nets.get("seconds"),
                    "test_questions": len(fold.test_rows),
                    "chosen": chosen,
                    "results": test_metrics(m, fold, fp, chosen, cfg.seed),
                }
            res["kinds"][kind] = aggregate(res["folds"], kind)
            # one choice over every fold's validation questions: what the shipped bundle uses
            res.setdefault("chosen_all", {})[kind] = select_configs(val, "")
        report["datasets"][ds] = res
    report["seconds"] = time.time() - t0
    figures = collect_figures(report)
    report["targets"] = targets(report)
    for res in report["datasets"].values():  # per fold: means over the draws (keeps it small)
        for f in res["folds"].values():
            f["results"] = _mean_over_draws(f["results"])
    return write_report(report, figures, out)


def _load(ds: str, cfg: GenConfig) -> EvalMatrix:
    m = load_matrix(ds)
    if cfg.quick:
        m = _quick_matrix(m)
    return add_features(m, cfg.features) if cfg.features else m


def _command_args(cfg: GenConfig) -> str:
    """The flags that differ from the defaults (to print the command that made a report)."""
    default = asdict(GenConfig())
    parts = []
    for k, v in asdict(cfg).items():
        if v != default[k] and k != "merge":
            flag = "--" + k.replace("_", "-")
            parts.append(flag if v is True else f"{flag} {v}")
    return " ".join(parts)


def write_report(report: dict[str, Any], figures: dict[str, Any], out: Path) -> dict[str, Any]:
    """report.json (small), figures.json (the curves behind the plots), summary.md, plots."""
    from training.evaluation import gen_report

    slim = strip_private(report)
    (out / "report.json").write_text(json.dumps(slim, default=_json) + "\n")
    (out / "figures.json").write_text(json.dumps(figures, default=_json) + "\n")
    gen_report.write_plots(figures, out)
    (out / "summary.md").write_text(gen_report.render_summary(slim))
    log.info("wrote %s", out / "report.json")
    return slim


def merge_reports(parts: list[Path], out: Path) -> dict[str, Any]:
    """One report from runs over different data sets (same config otherwise), e.g. run in
    parallel: their data sets side by side, the targets recomputed, the plots redrawn."""
    reports = [json.loads((p / "report.json").read_text()) for p in parts]
    figs = [json.loads((p / "figures.json").read_text()) for p in parts]
    merged = dict(reports[0])
    merged["datasets"] = {k: v for r in reports for k, v in r["datasets"].items()}
    merged["config"] = {**reports[0]["config"], "datasets": ",".join(merged["datasets"])}
    merged["seconds"] = sum(r["seconds"] for r in reports)
    merged["merged_from"] = [str(p) for p in parts]
    merged["commands"] = [
        "junction eval generalization " + r["config"].get("command_args", "") for r in reports
    ] + [f"junction eval generalization --merge {','.join(map(str, parts))} --out {out}"]
    merged["targets"] = targets(merged)
    figures: dict[str, Any] = {"frontiers": {}, "kinds": {}}
    for f in figs:
        figures["frontiers"].update(f.get("frontiers", {}))
        figures["kinds"].update(f.get("kinds", {}))
    out.mkdir(parents=True, exist_ok=True)
    return write_report(merged, figures, out)


def _mean_over_draws(results: dict[str, Any]) -> dict[str, Any]:
    """{"k/draw": tree} -> {"k": tree of means over the draws} (numbers only; lists dropped)."""
    by_k: dict[str, list[Any]] = {}
    for kd, tree in results.items():
        by_k.setdefault(kd.split("/")[0], []).append(tree)

    def merge(trees: list[Any]) -> Any:
        first = trees[0]
        if isinstance(first, dict):
            keys = [k for k in first if not str(k).startswith("_")]
            return {k: merge([t[k] for t in trees if k in t]) for k in keys}
        if isinstance(first, bool | int | float):
            vals = [float(t) for t in trees if np.isfinite(float(t))]
            return round(float(np.mean(vals)), 5) if vals else None
        return None

    return {k: merge(v) for k, v in by_k.items()}


def _quick_matrix(m: EvalMatrix) -> EvalMatrix:
    """A small slice for tests: 6 models, 400 train / 120 val / 120 test questions."""
    rng = np.random.default_rng(0)
    rows = np.concatenate(
        [rng.choice(np.flatnonzero(m.split == s), n, replace=False)
         for s, n in (("train", 400), ("val", 120), ("test", 120))]
    )  # fmt: skip
    return m.subset(np.sort(rows)).select_models(m.models[:6])


def _json(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))


def aggregate(folds: dict[str, Any], kind: str) -> dict[str, Any]:
    """Mean (and std over folds x draws) of every figure, per k, pool and method."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    corr: dict[str, dict[str, dict[str, list[float]]]] = {}
    pairs: dict[str, dict[str, list[float]]] = {}
    pair_names: set[str] = set()
    for f in folds.values():
        if f["kind"] != kind:
            continue
        for kd, e in f["results"].items():
            k = kd.split("/")[0]
            for pool, pe in e["pools"].items():
                slot = acc.setdefault(f"{pool}/{k}", {})
                for ref in ("best_single", "oracle", "hull_auc", "category_best"):
                    if pe.get(ref) is not None:
                        slot.setdefault("ref", {}).setdefault(ref, []).append(pe[ref])
                for name, me in pe["methods"].items():
                    for fig in ("accuracy", "frontier_auc", "above_hull", "top_share"):
                        slot.setdefault(name, {}).setdefault(fig, []).append(me[fig])
            for name, ce in e["correctness"].items():
                for fig, v in ce.items():
                    corr.setdefault(k, {}).setdefault(name, {}).setdefault(fig, []).append(v)
            for pair, pr in e["pairs"].items():
                pair_names.add(pair)
                for name, v in pr.items():
                    if np.isfinite(v["apgr"]):
                        pairs.setdefault(f"{k}", {}).setdefault(name, []).append(v["apgr"])
                        pairs.setdefault(f"{k}/cpt50", {}).setdefault(name, []).append(v["cpt50"])

    def ms(v: list[float]) -> dict[str, float]:
        a = np.asarray(v, dtype=float)
        return {"mean": float(np.nanmean(a)), "std": float(np.nanstd(a)), "n": int(len(a))}

    return {
        "routing": {
            pk: {name: {fig: ms(v) for fig, v in figs.items()} for name, figs in slot.items()}
            for pk, slot in acc.items()
        },
        "correctness": {
            k: {name: {fig: ms(v) for fig, v in figs.items()} for name, figs in d.items()}
            for k, d in corr.items()
        },
        "pairs": {k: {name: ms(v) for name, v in d.items()} for k, d in pairs.items()},
        "pair_names": sorted(pair_names),
    }


def collect_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The curves the plots need (frontiers at k = 128, first draw; accuracy vs k; APGR vs k)."""
    figs: dict[str, Any] = {}
    for ds, res in report["datasets"].items():
        for fname, f in res["folds"].items():
            e = f["results"].get("128/0")
            if e is None:
                continue
            for pool, pe in e["pools"].items():
                figs.setdefault("frontiers", {})[f"{ds} {fname} {pool}"] = {
                    "curves": {n: me["_frontier"] for n, me in pe["methods"].items()
                               if me.get("_frontier")},
                    "singles": pe.get("_singles"),
                    "hull": pe.get("_hull"),
                }  # fmt: skip
        figs.setdefault("kinds", {})[ds] = res["kinds"]
    return figs


def strip_private(o: Any) -> Any:
    """Drop the '_'-prefixed curve data (plots only) so report.json stays small."""
    if isinstance(o, dict):
        return {k: strip_private(v) for k, v in o.items() if not str(k).startswith("_")}
    if isinstance(o, list):
        return [strip_private(v) for v in o]
    return o


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, read off the aggregated figures (k = 128 unless stated)."""
    out: dict[str, Any] = {}
    baselines = ("locus", "mf", "knn", "ridge", "best_avg")
    for ds, res in report["datasets"].items():
        kinds = res["kinds"].get("models")
        if not kinds:
            continue
        t: dict[str, Any] = {}
        for pool in ("held", "all"):
            r = kinds["routing"].get(f"{pool}/128")
            if r is None:
                continue
            ours = r[METHOD]["accuracy"]["mean"]
            best_b = max(baselines, key=lambda b: r[b]["accuracy"]["mean"])
            ks = sorted({int(k.split("/")[1]) for k in kinds["routing"] if k.startswith(pool)})
            below = [
                k for k in ks
                if kinds["routing"][f"{pool}/{k}"][METHOD]["accuracy"]["mean"]
                < kinds["routing"][f"{pool}/{k}"]["best_avg"]["accuracy"]["mean"]
            ]  # fmt: skip
            t[f"routing_{pool}_k128"] = {
                "ours": ours,
                "best_baseline": best_b,
                "best_baseline_accuracy": r[best_b]["accuracy"]["mean"],
                "margin_points": 100 * (ours - r[best_b]["accuracy"]["mean"]),
                "met_1pt": bool(ours >= r[best_b]["accuracy"]["mean"] + 0.01),
                "ks_below_best_avg": below,
                "best_single_test": r["ref"]["best_single"]["mean"],
                "above_hull": r[METHOD]["above_hull"]["mean"],
                "frontier_auc": r[METHOD]["frontier_auc"]["mean"],
                "hull_auc": r["ref"]["hull_auc"]["mean"],
            }
        pr = kinds["pairs"].get("128")
        if pr:
            ours = pr[METHOD]["mean"]
            t["pairs_k128"] = {
                "ours": ours,
                "std": pr[METHOD]["std"],
                "n": pr[METHOD]["n"],
                "baselines": {b: pr[b]["mean"] for b in baselines if b in pr},
                "met": bool(ours >= 0.55 and all(ours > pr[b]["mean"] for b in baselines)),
            }
        c = kinds["correctness"].get("128")
        if c:
            t["correctness_k128"] = {
                n: {"accuracy": v["accuracy"]["mean"], "log_loss": v["log_loss"]["mean"],
                    "auroc": v["auroc"]["mean"]}
                for n, v in c.items()
            }  # fmt: skip
        out[ds] = t
    return out


def _run(args: argparse.Namespace) -> int:
    from training.config_cli import dataclass_from_args

    cfg = dataclass_from_args(GenConfig, args)
    if cfg.merge:
        merge_reports([Path(p) for p in cfg.merge.split(",")], Path(cfg.out))
        return 0
    if cfg.quick:
        cfg = replace(cfg, task_folds=min(cfg.task_folds, 2))
    run_generalization(cfg)
    return 0


def register_generalization(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    from training.config_cli import add_dataclass_args

    p = subparsers.add_parser(
        "generalization", help="leave-models-out / leave-tasks-out routing benchmark"
    )
    add_dataclass_args(p, GenConfig)
    p.set_defaults(handler=_run)

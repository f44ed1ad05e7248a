"""``junction eval``: hold LOCUS and the routers against the baselines on one data set.

Writes ``report.json``, ``summary.md`` and PNG plots into ``--out`` for a built-in data set
(``mmlu_pro``, ``routerbench``) or any evaluation log. The sections:

1. correctness prediction (accuracy at 0.5, AUROC, log-loss) per method on the test questions;
2. routing accuracy at lambda = 0 against the best single model and the oracle;
3. the accuracy-cost frontier over 100 log-spaced lambdas and its normalised AUC, against the
   upper convex hull of the single models' (cost, accuracy) points;
4. sample efficiency: held-out models represented from k evaluations (LOCUS: one forward pass;
   MF: a free embedding fitted with its predictor frozen; constant: the mean of the k scores);
5. onboarding: held-out models from k evaluations against the same models from all of theirs;
6. geometry: correlation of embedding distance with correctness disagreement, and a 2-D map;
7. portfolio: routing accuracy of k-center portfolios against the full pool;
8. determinism: re-embedding gives bitwise-identical vectors; MF retrained with a new seed does not.

Protocol for 4 and 5 (documented in the report): the encoder and the MF predictor are trained on
the seen models only; each held-out model is then represented from k of its training-split
evaluations (``repeats`` random draws per k) and scored on its test-split questions. This is the
product's onboarding path: a new model arrives with k evaluations and no retraining.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.data import EvalMatrix, load_matrix

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]
SAMPLE_KS = (16, 32, 64, 128, 256, 512)


@dataclass
class EvalConfig:
    """Knobs of the evaluation harness (the trained components have their own configs)."""

    dataset: str = field(
        default="mmlu_pro", metadata={"help": "mmlu_pro, routerbench, or a log file"}
    )
    out: str = field(default="reports/eval", metadata={"help": "output folder"})
    locus_checkpoint: str = field(
        default="",
        metadata={"help": "use this trained LOCUS checkpoint instead of training one ('' = auto)"},
    )
    locus_steps: int = field(
        default=0, metadata={"help": "override LOCUS training steps (0 = config default)"}
    )
    mf_steps: int = field(
        default=0, metadata={"help": "override MF training steps (0 = config default)"}
    )
    repeats: int = field(default=5, metadata={"help": "random draws per k in sections 4 and 5"})
    knn_k: int = field(default=50, metadata={"help": "neighbours of the kNN baseline"})
    max_portfolio: int = field(default=10, metadata={"help": "largest k-center portfolio"})
    seed: int = field(default=0, metadata={"help": "seed of the harness' own sampling"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    held_out: str = field(
        default="",
        metadata={
            "help": "comma-separated models to hold out of training ('' = the data set's own)"
        },
    )
    quick: bool = field(default=False, metadata={"help": "tiny configs (tests and smoke runs)"})


@dataclass
class Prepared:
    """The data set cut the way every section uses it."""

    matrix: EvalMatrix
    seen: list[str]
    unseen: list[str]
    train: EvalMatrix  # seen models, train split
    val: EvalMatrix
    test: EvalMatrix


def prepare(matrix: EvalMatrix, held_out: str = "") -> Prepared:
    seen = matrix.meta_models("seen_models", matrix.models)
    unseen = matrix.meta_models("unseen_models")
    if held_out:
        unseen = [m.strip() for m in held_out.split(",") if m.strip()]
        unknown = [m for m in unseen if m not in matrix.models]
        if unknown:
            raise KeyError(f"--held-out names unknown model(s) {unknown}; known: {matrix.models}")
        seen = [m for m in matrix.models if m not in unseen]
        matrix.meta.update(seen_models=seen, unseen_models=unseen)
    pool = matrix.select_models(seen)
    return Prepared(
        matrix=matrix,
        seen=seen,
        unseen=unseen,
        train=pool.for_split("train"),
        val=pool.for_split("val"),
        test=pool.for_split("test"),
    )


def _observed(matrix: EvalMatrix, j: int) -> tuple[Array, Array]:
    obs = ~np.isnan(matrix.scores[:, j])
    return matrix.embeddings[obs], matrix.scores[obs, j]


def _draw(X: Array, y: Array, k: int, rng: np.random.Generator) -> tuple[Array, Array]:
    idx = rng.choice(len(y), size=min(k, len(y)), replace=False)
    return X[idx], y[idx]


def _corr_acc(p: Array, scores: Array) -> float:
    obs = ~np.isnan(scores)
    return float(((p[obs] > 0.5) == (scores[obs] > 0.5)).mean())


def sample_efficiency(
    *,
    train: EvalMatrix,
    test: EvalMatrix,
    locus_embed: Callable[[Array, Array], Array],
    locus_predict: Callable[[Array, Array], Array],
    mf_embed: Callable[[Array, Array], Array],
    mf_predict: Callable[[Array, Array], Array],
    ks: tuple[int, ...],
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    """Sections 4 and 5: held-out models represented from k evaluations, scored on test questions.

    ``train`` and ``test`` hold only the held-out models. Accuracy is pooled over their test cells
    and averaged over ``repeats`` draws; "all" uses every training evaluation once.
    """
    rng = np.random.default_rng(seed)
    methods = ("locus", "mf", "constant")
    per_k: dict[str, dict[str, float]] = {}
    full_n = [int((~np.isnan(train.scores[:, j])).sum()) for j in range(len(train.models))]
    for k in (*ks, None):
        accs: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(1 if k is None else repeats):
            sets = [_observed(train, j) for j in range(len(train.models))]
            if k is not None:
                sets = [_draw(X, y, k, rng) for X, y in sets]
            Z_l = np.stack([locus_embed(X, y) for X, y in sets])
            Z_m = np.stack([mf_embed(X, y) for X, y in sets])
            const = np.array([y.mean() for _, y in sets], dtype=np.float32)
            accs["locus"].append(_corr_acc(locus_predict(Z_l, test.embeddings), test.scores))
            accs["mf"].append(_corr_acc(mf_predict(Z_m, test.embeddings), test.scores))
            accs["constant"].append(
                _corr_acc(np.broadcast_to(const, test.scores.shape).copy(), test.scores)
            )
        per_k["all" if k is None else str(k)] = {
            **{m: float(np.mean(v)) for m, v in accs.items()},
            **{f"{m}_std": float(np.std(v)) for m, v in accs.items()},
        }
    return {"per_k": per_k, "full_evaluations_per_model": full_n, "repeats": repeats}


def mf_matching_k(per_k: dict[str, dict[str, float]], at_k: int = 64) -> dict[str, Any]:
    """How many evaluations MF needs to match LOCUS at ``at_k`` (first k with MF >= LOCUS@k).

    Between grid points the crossing is interpolated linearly in log2(k); if MF never reaches it
    within the grid (including "all"), the answer is reported as a lower bound.
    """
    target = per_k[str(at_k)]["locus"]
    ks = [int(k) for k in per_k if k != "all"]
    points = [(float(k), per_k[str(k)]["mf"]) for k in sorted(ks)]
    prev: tuple[float, float] | None = None
    for k, acc in points:
        if acc >= target:
            if prev is None or prev[1] >= target:
                return {"target": target, "mf_k": k, "ratio": k / at_k, "bound": "exact"}
            lo, hi = np.log2(prev[0]), np.log2(k)
            t = (target - prev[1]) / (acc - prev[1])
            kk = float(2 ** (lo + t * (hi - lo)))
            return {"target": target, "mf_k": kk, "ratio": kk / at_k, "bound": "interpolated"}
        prev = (k, acc)
    all_acc = per_k.get("all", {}).get("mf", -1.0)
    largest = max(ks)
    return {
        "target": target,
        "mf_k": None,
        "ratio": None,
        "bound": f"MF stays below LOCUS@{at_k} up to k={largest} (ratio > {largest / at_k:g})"
        + (" and with all evaluations" if all_acc < target else ""),
    }


def disagreement_matrix(scores: Array) -> Array:
    """[M, M] fraction of commonly evaluated queries on which two models' correctness differs."""
    obs = ~np.isnan(scores)
    right = np.nan_to_num(scores) > 0.5
    o = obs.astype(np.float32)
    both = o.T @ o
    differ = (right & obs).astype(np.float32).T @ (~right & obs).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (differ + differ.T) / both
    return out.astype(np.float32)


def geometry(Z: Array, scores: Array) -> dict[str, Any]:
    """Section 6: Spearman/Pearson of embedding distance against correctness disagreement."""
    from scipy.stats import pearsonr, spearmanr

    n = len(Z)
    iu = np.triu_indices(n, k=1)
    euclid = np.linalg.norm(Z[:, None, :] - Z[None, :, :], axis=-1)[iu]
    unit = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    cosine = (1.0 - unit @ unit.T)[iu]
    dis = disagreement_matrix(scores)[iu]
    ok = ~np.isnan(dis)
    out: dict[str, Any] = {"pairs": int(ok.sum())}
    for name, d in (("euclidean", euclid), ("cosine", cosine)):
        out[name] = {
            "spearman": float(spearmanr(d[ok], dis[ok]).statistic),
            "pearson": float(pearsonr(d[ok], dis[ok]).statistic),
        }
    out["_points"] = {"euclidean": euclid[ok].tolist(), "disagreement": dis[ok].tolist()}
    return out


def map_2d(Z: Array) -> Array:
    """A 2-D map of model embeddings (PCA; distances between points are what it preserves best)."""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=0).fit_transform(Z).astype(np.float32)


def determinism(
    embed: Callable[[Array, Array], Array], sets: list[tuple[Array, Array]]
) -> dict[str, Any]:
    """Section 8: embedding the same evaluations twice (and in another order) gives the same vector."""
    first = np.stack([embed(X, y) for X, y in sets])
    again = np.stack([embed(X, y) for X, y in sets])
    rng = np.random.default_rng(1)
    perms = [rng.permutation(len(y)) for _, y in sets]
    shuffled = np.stack([embed(X[p], y[p]) for (X, y), p in zip(sets, perms, strict=True)])
    return {
        "repeat_bitwise_identical": bool(np.array_equal(first, again)),
        "repeat_max_abs_diff": float(np.abs(first - again).max()),
        "permuted_max_abs_diff": float(np.abs(first - shuffled).max()),
    }


@dataclass
class MethodOutput:
    p: Array  # [Q_test, M] predicted correctness
    cost: Array  # [Q_test, M] predicted cost (USD)
    predicts_correctness: bool = True


def _locus_configs(cfg: EvalConfig) -> tuple[Any, Any]:
    from training.locus import LocusConfig, MFConfig

    if cfg.quick:
        locus = LocusConfig(
            d_model=16, num_latents=4, num_heads=2, predictor_hidden=16, steps=40, eval_every=20,
            models_per_step=4, enc_set_min=8, enc_set_max=32, target_batch_size=32, warmup_steps=5,
        )  # fmt: skip
        mf = MFConfig(d_model=16, predictor_hidden=16, steps=40, eval_every=20, batch_size=256)
    else:
        locus, mf = LocusConfig(), MFConfig()
    if cfg.locus_steps:
        locus.steps = cfg.locus_steps
    if cfg.mf_steps:
        mf.steps = cfg.mf_steps
    return locus, mf


def _shipped_bundle(dataset: str) -> Path | None:
    """The shipped default bundle when it was built on this data set (what the gateway serves)."""
    from training.bundle import DEFAULT_BUNDLE

    spec = DEFAULT_BUNDLE / "bundle.json"
    if not spec.exists() or json.loads(spec.read_text()).get("meta", {}).get("dataset") != dataset:
        return None
    return DEFAULT_BUNDLE


def _served_method(
    locus: Any, bundle_dir: Path | None, prep: Prepared
) -> Callable[[Array, bool], Array] | None:
    """LOCUS-KR as the gateway serves the shipped pool: the bundle's embeddings, evidence and
    parameters (training/routers/locus_kr.py); None without a bundle that carries them."""
    if bundle_dir is None or locus.routing.get("method") != "locus_kr":
        return None
    from training.bundle import load_bundle
    from training.routers.locus_kr import Evidence, KRParams, kr_predict, penalise, unit

    bundle = load_bundle(bundle_dir)
    if bundle.names != prep.seen:
        return None
    params = KRParams.from_json(locus.routing["params"])
    Zb = bundle.embeddings()
    evs = []
    for i, name in enumerate(bundle.names):
        ev = bundle.evidence(name)
        if ev is None:
            return None
        evs.append(Evidence.build(ev[0], ev[1], locus.predict(Zb[i : i + 1], ev[0])[:, 0]))

    def predict(X: Array, with_default: bool) -> Array:
        prior = locus.predict(Zb, X)
        Xu = unit(X)
        p = np.stack([kr_predict(e, prior[:, i], params, X=Xu) for i, e in enumerate(evs)], 1)
        return penalise(p, [e.mean for e in evs], params.margin) if with_default else p

    return predict


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Run every section and write the report; returns the report dict."""
    import torch

    from training.cost import CostModel, query_prompt_tokens
    from training.evaluation import metrics as mt
    from training.evaluation import plots
    from training.locus import LocusEmbedder, fit_model_embedding, train_locus, train_mf
    from training.locus.evaluate import embed_models
    from training.routers import (
        BestSingleRouter,
        ConstantRouter,
        KMeansConfig,
        KNNRouter,
        MLPConfig,
        OracleRouter,
        RandomRouter,
        train_kmeans_router,
        train_mlp_router,
    )
    from training.selection import k_center

    torch.set_num_threads(cfg.threads)
    t_start = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    matrix = load_matrix(cfg.dataset)
    prep = prepare(matrix, cfg.held_out)
    tr, va, te = prep.train, prep.val, prep.test
    locus_cfg, mf_cfg = _locus_configs(cfg)
    timings: dict[str, float] = {}

    # --- train or load the methods -------------------------------------------------------------
    t = time.time()
    ckpt = Path(cfg.locus_checkpoint) if cfg.locus_checkpoint else None
    # `make report`: the shipped bundle's LOCUS and routers are evaluated, not retrained.
    bundle_dir = None
    if ckpt is None and not cfg.quick and not cfg.held_out and not Path(str(cfg.dataset)).suffix:
        bundle_dir = _shipped_bundle(str(cfg.dataset))
        ckpt = None if bundle_dir is None else bundle_dir / "locus.pt"
    if ckpt is not None:
        log.info("LOCUS: using checkpoint %s", ckpt)
        locus = LocusEmbedder.from_checkpoint(ckpt)
    else:
        log.info("LOCUS: training on %d seen models", len(prep.seen))
        locus = train_locus(matrix, locus_cfg, models=prep.seen, progress=True).embedder()
    timings["locus_train_or_load_s"] = time.time() - t
    Z = embed_models(locus, tr)
    cost_model = CostModel.fit(tr)
    cost_te = cost_model.predict(query_prompt_tokens(te))
    t = time.time()
    mf = train_mf(matrix, mf_cfg, models=prep.seen, progress=True)
    timings["mf_train_s"] = time.time() - t

    routers: dict[str, Any] = {}
    t = time.time()
    if bundle_dir is not None and (bundle_dir / "mlp.pt").exists():
        from training.routers import load_router

        log.info("routers: the shipped bundle's (%s)", bundle_dir)
        routers["mlp"] = load_router(bundle_dir / "mlp.pt")
        routers["kmeans"] = load_router(bundle_dir / "kmeans.pt")
    else:
        mlp_cfg = MLPConfig(epochs=2 if cfg.quick else 8, hidden=32 if cfg.quick else 256)
        routers["mlp"] = train_mlp_router(tr, mlp_cfg, val=va, progress=True)
        timings["mlp_train_s"] = time.time() - t
        t = time.time()
        routers["kmeans"] = train_kmeans_router(
            tr, KMeansConfig(k=min(30, max(2, tr.num_queries // 20)))
        )
        timings["kmeans_train_s"] = time.time() - t
    routers["knn"] = KNNRouter(tr, k=min(cfg.knn_k, tr.num_queries))
    routers["constant"] = ConstantRouter(tr)
    routers["best_single"] = BestSingleRouter(tr)
    routers["random"] = RandomRouter(tr, seed=cfg.seed)

    # LOCUS and MF predict correctness only. Their per-query cost comes from the learned cost head
    # of the MLP router: realised cost is dominated by the completion's length, which varies per
    # query, and a prompt-length cost model (kept in the report as "locus_prompt_cost") misses it.
    cost_te_learned = routers["mlp"].predict(te.embeddings).cost_usd
    served = _served_method(locus, bundle_dir, prep)
    methods: dict[str, MethodOutput] = {
        "locus": MethodOutput(locus.predict(Z, te.embeddings), cost_te_learned),
        "locus_prompt_cost": MethodOutput(locus.predict(Z, te.embeddings), cost_te),
        "mf": MethodOutput(mf.predict(te.embeddings), cost_te_learned),
    }
    if served is not None:
        # the served decision (P(correct) after the do-no-harm default penalty), and the same
        # method's P(correct) itself for the correctness columns
        methods["locus_kr"] = MethodOutput(
            served(te.embeddings, True), cost_te_learned, predicts_correctness=False
        )
        methods["locus_kr_p"] = MethodOutput(served(te.embeddings, False), cost_te_learned)
    cost_va = routers["mlp"].predict(va.embeddings).cost_usd
    val_p: dict[str, Array] = {
        "locus": locus.predict(Z, va.embeddings),
        "locus_prompt_cost": locus.predict(Z, va.embeddings),
        "mf": mf.predict(va.embeddings),
        **{n: r.predict(va.embeddings).p_correct for n, r in routers.items()},
        **({"locus_kr_p": served(va.embeddings, False)} if served is not None else {}),
    }
    for name, r in routers.items():
        o = r.predict(te.embeddings)
        methods[name] = MethodOutput(
            o.p_correct, o.cost_usd, predicts_correctness=name not in ("best_single", "random")
        )
    oracle = OracleRouter(te).predict(te.embeddings)
    methods["oracle"] = MethodOutput(oracle.p_correct, oracle.cost_usd, predicts_correctness=False)

    # --- 1-3: correctness, routing, frontier ---------------------------------------------------
    # A single model's accuracy counts an unevaluated test question as wrong, as routing does.
    singles = {
        name: (float(np.nanmean(te.cost_usd[:, j])), float(np.nan_to_num(te.scores[:, j]).mean()))
        for j, name in enumerate(te.models)
    }
    hull_c, hull_a = mt.upper_hull(
        np.array([c for c, _ in singles.values()]), np.array([a for _, a in singles.values()])
    )
    best_name = te.models[routers["best_single"].best]
    section: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for name, mo in methods.items():
        entry: dict[str, Any] = {}
        if mo.predicts_correctness:
            # The default-model policy: its margin is tuned on the validation split only.
            default = routers["best_single"].best
            margin, val_acc = mt.tune_margin(val_p[name], cost_va, va.scores, default)
            choice_m = mt.choose_with_default(mo.p, mo.cost, 0.0, default, margin)
            entry["routing_with_default"] = {
                "margin": margin,
                "val_accuracy": val_acc,
                "test_accuracy": mt.realised(choice_m, te.scores, te.cost_usd)[0],
                "switch_rate": float((choice_m != default).mean()),
            }
            entry["correctness_accuracy"] = mt.correctness_accuracy(mo.p, te.scores)
            entry["auroc"] = mt.auroc(mo.p, te.scores)
            entry["log_loss"] = mt.log_loss(mo.p, te.scores)
        if name == "oracle":
            choice = OracleRouter(te).choice()
            entry["routing_accuracy"], entry["routing_cost"] = mt.realised(
                choice, te.scores, te.cost_usd
            )
        else:
            choice0 = mt.choose(mo.p, mo.cost, 0.0)
            entry["routing_accuracy"], entry["routing_cost"] = mt.realised(
                choice0, te.scores, te.cost_usd
            )
            fc, fa = mt.frontier(mo.p, mo.cost, te.scores, te.cost_usd)
            entry["frontier_auc"] = mt.normalised_auc(fc, fa)
            entry["frontier_cost_range"] = [float(fc.min()), float(fc.max())]
            entry["above_hull"] = mt.fraction_above_hull(fc, fa, hull_c, hull_a)
            entry["hull_auc_same_range"] = mt.hull_auc(hull_c, hull_a, fc)
            if name not in ("best_single", "random", "constant"):
                curves[name] = (fc.tolist(), fa.tolist())
        section[name] = entry
    report: dict[str, Any] = {
        "dataset": str(cfg.dataset),
        "config": asdict(cfg),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": cfg.threads,
        },
        "pool": prep.seen,
        "held_out": prep.unseen,
        "test_questions": te.num_queries,
        "best_single_model": {"name": best_name, "test_accuracy": singles[best_name][1]},
        "oracle_accuracy": section["oracle"]["routing_accuracy"],
        "single_models": {n: {"cost": c, "accuracy": a} for n, (c, a) in singles.items()},
        "single_model_hull": {"cost": hull_c.tolist(), "accuracy": hull_a.tolist()},
        "methods": section,
        "lambda_grid": {
            "min": float(mt.LAMBDAS[0]),
            "max": float(mt.LAMBDAS[-1]),
            "n": len(mt.LAMBDAS),
        },
    }
    plots.frontier_plot(
        {k: (v[0], v[1]) for k, v in curves.items()},
        singles,
        (hull_c.tolist(), hull_a.tolist()),
        out / "frontier.png",
        title=f"{cfg.dataset}: accuracy-cost frontier (test split)",
    )

    # --- 4-5: sample efficiency and onboarding --------------------------------------------------
    if prep.unseen:
        held = matrix.select_models(prep.unseen)
        init = mf.embeddings.mean(0)
        ks = (4, 8) if cfg.quick else SAMPLE_KS
        eff = sample_efficiency(
            train=held.for_split("train"),
            test=held.for_split("test"),
            locus_embed=locus.embed,
            locus_predict=locus.predict,
            mf_embed=lambda X, y: fit_model_embedding(mf.predictor, X, y, init=init),
            mf_predict=lambda Zm, X: mf.predict(X, Zm),
            ks=ks,
            repeats=2 if cfg.quick else cfg.repeats,
            seed=cfg.seed,
        )
        per_k = eff["per_k"]
        at_k = 64 if 64 in ks else ks[-1]
        eff["mf_to_match_locus"] = mf_matching_k(per_k, at_k=at_k)
        eff["mf_to_match_locus"]["at_k"] = at_k
        full = per_k["all"]["locus"]
        eff["onboarding"] = {
            k: {"locus": v["locus"], "gap_to_full": full - v["locus"]}
            for k, v in per_k.items()
            if k != "all"
        }
        eff["onboarding_full_accuracy"] = full
        report["sample_efficiency"] = eff
        xs = [float(k) for k in ks]
        plots.lines_plot(
            xs,
            {m: [per_k[str(k)][m] for k in ks] for m in ("locus", "mf", "constant")},
            out / "sample_efficiency.png",
            title="held-out models from k evaluations: correctness accuracy",
            xlabel="evaluations per model (k)",
            ylabel="correctness accuracy (test)",
            logx=True,
            hlines={"LOCUS, all evaluations": full},
        )

    # --- 6: geometry ---------------------------------------------------------------------------
    all_train = matrix.for_split("train")
    Z_all = embed_models(locus, all_train)
    geo = geometry(Z_all, matrix.for_split("test").scores)
    points = geo.pop("_points")
    report["geometry"] = geo
    xy = map_2d(Z_all)
    plots.scatter_plot(
        xy[:, 0].tolist(),
        xy[:, 1].tolist(),
        out / "embedding_map.png",
        title="LOCUS model embeddings (PCA)",
        xlabel="PC 1",
        ylabel="PC 2",
        labels=matrix.models,
        groups=["held out" if m in prep.unseen else "pool" for m in matrix.models],
    )
    plots.scatter_plot(
        points["euclidean"],
        points["disagreement"],
        out / "distance_vs_disagreement.png",
        title=f"embedding distance vs disagreement (Spearman {geo['euclidean']['spearman']:.3f})",
        xlabel="euclidean distance between model embeddings",
        ylabel="correctness disagreement rate (test)",
    )

    # --- 7: portfolio --------------------------------------------------------------------------
    p_full = methods["locus"].p
    portfolio: dict[str, Any] = {
        "full_pool": mt.routing_accuracy(p_full, te.scores),
        "k_center": {},
    }
    for k in range(2, min(cfg.max_portfolio, len(prep.seen)) + 1):
        pick = k_center(Z, k)
        acc = mt.routing_accuracy(p_full[:, pick], te.scores[:, pick])
        portfolio["k_center"][str(k)] = {
            "models": [prep.seen[i] for i in pick],
            "routing_accuracy": acc,
        }
    report["portfolio"] = portfolio
    ks_p = [int(k) for k in portfolio["k_center"]]
    plots.lines_plot(
        [float(k) for k in ks_p],
        {"k-center portfolio": [portfolio["k_center"][str(k)]["routing_accuracy"] for k in ks_p]},
        out / "portfolio.png",
        title="routing accuracy of k-center portfolios (LOCUS)",
        xlabel="portfolio size k",
        ylabel="routing accuracy (test)",
        hlines={
            "full pool": portfolio["full_pool"],
            f"best single ({best_name})": singles[best_name][1],
        },
    )

    # --- 8: determinism ------------------------------------------------------------------------
    sets = [_observed(tr, j) for j in range(len(tr.models))]
    det = determinism(locus.embed, sets[: min(6, len(sets))])
    if not cfg.quick:
        import dataclasses

        mf2 = train_mf(
            matrix,
            dataclasses.replace(mf_cfg, seed=mf_cfg.seed + 1),
            models=prep.seen,
            progress=True,
        )
        flips = (mf.predict(te.embeddings) > 0.5) != (mf2.predict(te.embeddings) > 0.5)
        det["mf_retrained_prediction_flip_rate"] = float(flips[~np.isnan(te.scores)].mean())
    report["determinism"] = det

    # --- scoring speed -------------------------------------------------------------------------
    X4k = np.resize(matrix.embeddings, (4096, matrix.embeddings.shape[1])).astype(np.float32)
    locus.predict(Z_all, X4k)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        locus.predict(Z_all, X4k)
        times.append(time.perf_counter() - t)
    report["scoring_4096_queries_ms"] = {
        "models": len(Z_all),
        "p50": float(np.median(times) * 1e3),
        "min": float(np.min(times) * 1e3),
    }
    timings["total_s"] = time.time() - t_start
    report["timings"] = timings
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "summary.md").write_text(render_summary(report))
    log.info("wrote %s", out / "report.json")
    return report


def _f(x: Any, nd: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def render_summary(r: dict[str, Any]) -> str:
    """The Markdown summary of a report (every number comes from ``report.json``)."""
    best = r["best_single_model"]
    lines = [
        f"# Junction evaluation: {r['dataset']}",
        "",
        f"Pool: {len(r['pool'])} models; {r['test_questions']} test questions. "
        f"Best single model: {best['name']} ({_f(best['test_accuracy'])}); oracle {_f(r['oracle_accuracy'])}.",
        "",
        "## 1-3. Correctness prediction, routing, accuracy-cost frontier (test split)",
        "",
        "| method | correctness acc | AUROC | log-loss | routing acc, argmax | routing acc, default+margin "
        "(switch rate) | frontier AUC | hull AUC, same range | above hull |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in r["methods"].items():
        hull = m.get("above_hull", {}).get("fraction")
        d = m.get("routing_with_default")
        dm = "-" if d is None else f"{d['test_accuracy']:.3f} ({d['switch_rate']:.0%})"
        lines.append(
            f"| {name} | {_f(m.get('correctness_accuracy'))} | {_f(m.get('auroc'))} | "
            f"{_f(m.get('log_loss'))} | {_f(m.get('routing_accuracy'))} | {dm} | "
            f"{_f(m.get('frontier_auc'))} | {_f(m.get('hull_auc_same_range'))} | "
            f"{'-' if hull is None else f'{hull:.0%}'} |"
        )
    lines += [
        "",
        "Routing 'default+margin' stays with the best training model unless another model's "
        "predicted correctness is higher by a margin tuned on the validation split.",
        "Frontier AUC is the normalised area, trapz(acc, cost) / (cost range), over 100 log-spaced "
        "lambdas; 'above hull' is the share of the router's cost range (within the single models' "
        "hull) where its frontier is at or above the convex hull of the single models; 'hull AUC, same range' is the "
        "normalised AUC of that hull over the router's own cost range (clipped to the hull's). "
        "Plot: `frontier.png`.",
    ]
    if "sample_efficiency" in r:
        eff = r["sample_efficiency"]
        lines += [
            "",
            "## 4-5. Sample efficiency and onboarding (held-out models)",
            "",
            f"Held-out models: {', '.join(r['held_out'])}. Each is represented from k of its training "
            f"evaluations ({eff['repeats']} random draws per k) by a model trained on the pool only, "
            "and scored on its test questions.",
            "",
            "| k | LOCUS | MF | constant |",
            "|---|---|---|---|",
        ]
        for k, v in eff["per_k"].items():
            lines.append(f"| {k} | {_f(v['locus'])} | {_f(v['mf'])} | {_f(v['constant'])} |")
        match = eff["mf_to_match_locus"]
        ratio = match.get("ratio")
        lines += [
            "",
            f"MF evaluations needed to match LOCUS at k={match['at_k']}: "
            + (
                f"{match['mf_k']:.0f} ({ratio:.1f}x, {match['bound']})" if ratio else match["bound"]
            ),
            "",
            "Onboarding gap (full-data accuracy minus k-evaluation accuracy): "
            + ", ".join(f"k={k}: {_f(v['gap_to_full'])}" for k, v in eff["onboarding"].items()),
            "Plot: `sample_efficiency.png`.",
        ]
    g = r["geometry"]
    lines += [
        "",
        "## 6. Geometry",
        "",
        f"Over {g['pairs']} model pairs, distance vs correctness disagreement: euclidean Spearman "
        f"{_f(g['euclidean']['spearman'])}, Pearson {_f(g['euclidean']['pearson'])}; cosine Spearman "
        f"{_f(g['cosine']['spearman'])}, Pearson {_f(g['cosine']['pearson'])}. "
        "Plots: `embedding_map.png`, `distance_vs_disagreement.png`.",
        "",
        "## 7. Portfolio (k-center on LOCUS embeddings)",
        "",
        f"Full pool routing accuracy {_f(r['portfolio']['full_pool'])}.",
        "",
        "| k | routing acc | models |",
        "|---|---|---|",
    ]
    for k, v in r["portfolio"]["k_center"].items():
        lines.append(f"| {k} | {_f(v['routing_accuracy'])} | {', '.join(v['models'])} |")
    d = r["determinism"]
    lines += [
        "",
        "## 8. Determinism",
        "",
        f"Re-embedding the same evaluations: bitwise identical = {d['repeat_bitwise_identical']}; "
        f"after shuffling their order, max |diff| = {d['permuted_max_abs_diff']:.2e}.",
    ]
    if "mf_retrained_prediction_flip_rate" in d:
        lines.append(
            f"MF retrained with another seed flips {d['mf_retrained_prediction_flip_rate']:.1%} "
            "of its test predictions."
        )
    s = r["scoring_4096_queries_ms"]
    lines += [
        "",
        f"Scoring 4,096 queries against {s['models']} models: {s['p50']:.1f} ms (median of 20).",
        "",
    ]
    return "\n".join(lines)


def _eval(args: argparse.Namespace) -> int:
    from training.config_cli import dataclass_from_args

    run_eval(dataclass_from_args(EvalConfig, args))
    return 0


def register_eval(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.config_cli import add_dataclass_args

    p = subparsers.add_parser("eval", help="evaluation report: LOCUS and routers against baselines")
    add_dataclass_args(p, EvalConfig)
    p.set_defaults(handler=_eval)
    # `junction eval generalization --out DIR`; plain `junction eval --dataset ...` is unchanged.
    from training.evaluation.full_evidence import register_full_evidence
    from training.evaluation.generalization import register_generalization

    reports = p.add_subparsers(dest="eval_command", required=False, metavar="REPORT")
    register_generalization(reports)
    register_full_evidence(reports)

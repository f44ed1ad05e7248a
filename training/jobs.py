"""``junction train ...``: LOCUS on a data set, and the default bundle the gateway ships with."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from training.config_cli import add_dataclass_args, dataclass_from_args

log = logging.getLogger(__name__)

# The shipped LOCUS checkpoint lives in the default bundle (trained by `junction train locus` on the
# MMLU-Pro seen models with the default LocusConfig; its validation metrics are inside it).
SHIPPED_LOCUS = Path(__file__).resolve().parent / "artifacts" / "default" / "locus.pt"


def _train_locus(args: argparse.Namespace) -> int:
    import torch

    from training.data import load_matrix
    from training.locus import LocusConfig, train_locus

    torch.set_num_threads(args.threads)
    cfg = dataclass_from_args(LocusConfig, args)
    matrix = load_matrix(args.dataset)
    result = train_locus(matrix, cfg, checkpoint_path=args.out)
    log.info(
        "LOCUS trained in %.0f s (best step %d): %s",
        result.seconds,
        result.best_step,
        result.metrics,
    )
    return 0


# Where the benchmark that chose LOCUS-KR's parameters writes its report (committed).
GENERALIZATION_REPORT = (
    Path(__file__).resolve().parent / "evaluation" / "results" / "generalization" / "report.json"
)
EVIDENCE_PER_MODEL = 512  # = generalization.SEEN_EVIDENCE: what the benchmark's pool models hold


def routing_params(report: Path = GENERALIZATION_REPORT) -> dict[str, object]:
    """LOCUS-KR's parameters chosen on every MMLU-Pro leave-models-out fold's validation questions
    (``chosen_all`` in the benchmark report); the defaults of ``KRParams`` if there is no report."""
    import json

    from training.routers.locus_kr import KRParams

    if not report.exists():
        log.warning("%s missing: LOCUS-KR with default parameters", report)
        return {"method": "locus_kr", "params": KRParams().to_json(), "chosen_on": "defaults"}
    chosen = json.loads(report.read_text())["datasets"]["mmlu_pro"]["chosen_all"]["models"]
    k, beta, alpha, alpha_g = chosen["locus_kr"]
    params = KRParams(
        k=int(k), beta=beta, alpha=alpha, alpha_g=alpha_g, margin=chosen["locus_kr_margin"]
    )
    return {
        "method": "locus_kr",
        "params": params.to_json(),
        "chosen_on": "validation questions of every MMLU-Pro leave-models-out fold "
        f"({report.name}: datasets.mmlu_pro.chosen_all.models)",
    }


def build_default_bundle(
    out: Path, *, locus_checkpoint: Path | None = None, retrain_routers: bool = False
) -> Path:
    """The gateway's default bundle, served with LOCUS-KR (training/routers/locus_kr.py).

    LOCUS is trained on the 18 MMLU-Pro seen models with the recipe the generalisation benchmark
    measures (``generalization.locus_fold_config``; or ``locus_checkpoint`` is used as is); each
    pool model is embedded from 512 seeded random training evaluations, which are shipped beside
    it (``evidence.npz``) for the kernel residual; the parameters chosen by the benchmark are
    stored in the checkpoint (``routing``). The MLP and K-means routers are kept when present.
    """
    from training.bundle import PoolModel, write_bundle, write_evidence
    from training.data import load_matrix
    from training.data.prices import price_of
    from training.evaluation.generalization import GenConfig, draw_rows, locus_fold_config
    from training.locus import LocusEmbedder, train_locus
    from training.routers import KMeansConfig, MLPConfig, train_kmeans_router, train_mlp_router

    matrix = load_matrix("mmlu_pro")
    seen = matrix.meta_models("seen_models")
    pool = matrix.select_models(seen)
    train = pool.for_split("train")
    out.mkdir(parents=True, exist_ok=True)
    if locus_checkpoint is not None:
        embedder = LocusEmbedder.from_checkpoint(locus_checkpoint)
    else:
        cfg = locus_fold_config(GenConfig())
        embedder = train_locus(matrix, cfg, models=seen, progress=True).embedder()
    embedder.routing = routing_params()
    embedder.save(out / "locus.pt")
    rows = draw_rows(np.arange(train.num_queries), EVIDENCE_PER_MODEL, 0, 1)
    X = train.embeddings[rows]
    write_evidence(out / "evidence.npz", X, seen, train.scores[rows].T)
    models: list[PoolModel] = []
    for j, name in enumerate(seen):
        obs = ~np.isnan(train.scores[rows, j])
        price = price_of(name)
        models.append(
            PoolModel(
                name=name,
                input_per_mtok=price.input_per_mtok,
                output_per_mtok=price.output_per_mtok,
                embedding=embedder.embed(X[obs], train.scores[rows, j][obs]),
                num_evaluations=int(obs.sum()),
                mean_prompt_tokens=float(np.nanmean(train.prompt_tokens[:, j])),
                mean_completion_tokens=float(np.nanmean(train.completion_tokens[:, j])),
                train_accuracy=float(np.nanmean(train.scores[:, j])),
                params_b=price.params_b,
                backend={"kind": "replay", "dataset": "mmlu_pro", "model": name},
            )
        )
    files = {"mlp": out / "mlp.pt", "kmeans": out / "kmeans.pt"}
    if retrain_routers or not all(p.exists() for p in files.values()):
        train_mlp_router(train, MLPConfig(), val=pool.for_split("val")).save(files["mlp"])
        train_kmeans_router(train, KMeansConfig()).save(files["kmeans"])
    path = write_bundle(
        out,
        locus_file="locus.pt",
        evidence_file="evidence.npz",
        models=models,
        routers={name: p.name for name, p in files.items()},
        meta={
            "dataset": "mmlu_pro",
            "pool": "MMLU-Pro seen models (replay backends: their real recorded answers)",
            "embedded_from": f"{EVIDENCE_PER_MODEL} seeded random training-split evaluations "
            "per model (shipped in evidence.npz)",
            "routing": embedder.routing,
            "locus_metrics": embedder.metrics,
        },
    )
    log.info("wrote %s with %d models, routing %s", path, len(models), embedder.routing)
    return path


def _default_bundle(args: argparse.Namespace) -> int:
    from training.bundle import DEFAULT_BUNDLE

    out = Path(args.out) if args.out else DEFAULT_BUNDLE
    if args.if_missing and (out / "bundle.json").exists():
        log.info("%s exists, nothing to build", out / "bundle.json")
        return 0
    build_default_bundle(
        out,
        locus_checkpoint=Path(args.locus) if args.locus else None,
        retrain_routers=args.retrain_routers,
    )
    return 0


def register_train(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.locus import LocusConfig

    train = subparsers.add_parser("train", help="train LOCUS, routers, or the default bundle")
    sub = train.add_subparsers(dest="train_command", required=True, metavar="WHAT")
    p = sub.add_parser("locus", help="train LOCUS on a data set's seen models")
    p.add_argument("--dataset", default="mmlu_pro", help="mmlu_pro, routerbench, or a log file")
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (.pt)")
    p.add_argument("--threads", type=int, default=2)
    add_dataclass_args(p, LocusConfig)
    p.set_defaults(handler=_train_locus)
    b = sub.add_parser("default-bundle", help="build the gateway's default artifact bundle")
    b.add_argument("--out", default="", help="folder (default: training/artifacts/default)")
    b.add_argument(
        "--locus", default="", help="embed with this LOCUS checkpoint ('' = train the recipe)"
    )
    b.add_argument("--retrain-routers", action="store_true", help="retrain MLP and K-means")
    b.add_argument("--if-missing", action="store_true")
    b.set_defaults(handler=_default_bundle)


__all__ = ["build_default_bundle", "register_train"]

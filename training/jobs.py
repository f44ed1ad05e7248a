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


def build_default_bundle(out: Path, *, locus_checkpoint: Path = SHIPPED_LOCUS) -> Path:
    """Embed the MMLU-Pro seen models with the shipped LOCUS, train the routers, write the bundle."""
    import shutil

    from training.bundle import PoolModel, write_bundle
    from training.data import load_matrix
    from training.data.prices import price_of
    from training.locus import LocusEmbedder
    from training.routers import KMeansConfig, MLPConfig, train_kmeans_router, train_mlp_router

    matrix = load_matrix("mmlu_pro")
    seen = matrix.meta_models("seen_models")
    train = matrix.select_models(seen).for_split("train")
    embedder = LocusEmbedder.from_checkpoint(locus_checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "locus.pt").exists() or not (out / "locus.pt").samefile(locus_checkpoint):
        shutil.copyfile(locus_checkpoint, out / "locus.pt")
    models: list[PoolModel] = []
    for j, name in enumerate(seen):
        obs = ~np.isnan(train.scores[:, j])
        price = price_of(name)
        models.append(
            PoolModel(
                name=name,
                input_per_mtok=price.input_per_mtok,
                output_per_mtok=price.output_per_mtok,
                embedding=embedder.embed(train.embeddings[obs], train.scores[obs, j]),
                num_evaluations=int(obs.sum()),
                mean_prompt_tokens=float(np.nanmean(train.prompt_tokens[:, j])),
                mean_completion_tokens=float(np.nanmean(train.completion_tokens[:, j])),
                train_accuracy=float(np.nanmean(train.scores[:, j])),
                params_b=price.params_b,
                backend={"kind": "replay", "dataset": "mmlu_pro", "model": name},
            )
        )
    pool = matrix.select_models(seen)
    mlp = train_mlp_router(train, MLPConfig(), val=pool.for_split("val"))
    kmeans = train_kmeans_router(train, KMeansConfig())
    routers = {"mlp": mlp.save(out / "mlp.pt"), "kmeans": kmeans.save(out / "kmeans.pt")}
    path = write_bundle(
        out,
        locus_file="locus.pt",
        models=models,
        routers={name: p.name for name, p in routers.items()},
        meta={
            "dataset": "mmlu_pro",
            "pool": "MMLU-Pro seen models (replay backends: their real recorded answers)",
            "embedded_from": "each model's training-split evaluations",
            "locus_metrics": embedder.metrics,
        },
    )
    log.info("wrote %s with %d models and routers %s", path, len(models), sorted(routers))
    return path


def _default_bundle(args: argparse.Namespace) -> int:
    from training.bundle import DEFAULT_BUNDLE

    out = Path(args.out) if args.out else DEFAULT_BUNDLE
    if args.if_missing and (out / "bundle.json").exists():
        log.info("%s exists, nothing to build", out / "bundle.json")
        return 0
    build_default_bundle(out, locus_checkpoint=Path(args.locus))
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
    b.add_argument("--locus", default=str(SHIPPED_LOCUS), help="LOCUS checkpoint to embed with")
    b.add_argument("--if-missing", action="store_true")
    b.set_defaults(handler=_default_bundle)


__all__ = ["build_default_bundle", "register_train"]

"""Subcommands of ``junction`` owned by ``training``: data, train, eval, bench (scoring/encoder)."""

from __future__ import annotations

import argparse
import logging


def _data_build(args: argparse.Namespace) -> int:
    from training.data.build import DATASETS, build

    datasets = tuple(args.dataset) if args.dataset else DATASETS
    for name, meta in build(datasets, if_missing=args.if_missing).items():
        logging.getLogger("junction").info(
            "%s: %s evaluations, splits %s", name, meta["num_evaluations"], meta["split_sizes"]
        )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data = subparsers.add_parser("data", help="build and inspect the derived evaluation data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    b = data_sub.add_parser("build", help="build compact derived files from ../shared/data")
    b.add_argument("--dataset", action="append", choices=["mmlu_pro", "routerbench"])
    b.add_argument("--if-missing", action="store_true", help="skip data sets already built")
    b.set_defaults(handler=_data_build)
    _register_train(subparsers)
    _register_eval(subparsers)
    from training.bench_encoder import register_bench
    from training.bench_scoring import register_scoring_bench

    register_bench(subparsers)
    register_scoring_bench(subparsers)


def _register_train(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.jobs import register_train

    register_train(subparsers)


def _register_eval(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.evaluation.harness import register_eval

    register_eval(subparsers)

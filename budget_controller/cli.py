"""``junction budget ...``: train TAB policies, evaluate them against the baselines, run live.

Usage::

    junction budget train --seed 0 --out budget_controller/artifacts --name tab
    junction budget train --seed 0 --all-subq
    junction budget eval --out reports/tab --seeds 0,1,2
    junction budget live --url http://127.0.0.1:8081/v1 --model smollm2-135m --out reports/tab-live
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from training.config_cli import add_dataclass_args, dataclass_from_args


def register(subparsers: Any) -> None:
    # config.py holds only dataclasses: registering stays light (no numpy or torch).
    from budget_controller.config import EnvConfig, EvalConfig, LiveConfig, TrainConfig

    p = subparsers.add_parser("budget", help="TAB turn-adaptive token budgets")
    sub = p.add_subparsers(dest="budget_command", required=True, metavar="ACTION")

    t = sub.add_parser("train", help="train one TAB policy with GRPO on the replay environment")
    add_dataclass_args(t, TrainConfig)
    add_dataclass_args(t, EnvConfig, prefix="env_")
    t.add_argument("--name", default=None, help="checkpoint name (default tab[_all_subq]_seedN)")
    t.set_defaults(handler=_train)

    e = sub.add_parser("eval", help="accuracy and tokens per method and budget; report + plots")
    add_dataclass_args(e, EvalConfig)
    add_dataclass_args(e, TrainConfig, prefix="train_")
    add_dataclass_args(e, EnvConfig, prefix="env_")
    e.add_argument("--out", type=Path, required=True, help="report folder")
    e.set_defaults(handler=_eval)

    lv = sub.add_parser("live", help="run policies against a real OpenAI-compatible model")
    add_dataclass_args(lv, LiveConfig)
    lv.add_argument("--out", type=Path, required=True, help="report folder")
    lv.set_defaults(handler=_live)


def _setup() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


def _train(args: argparse.Namespace) -> int:
    from budget_controller.config import EnvConfig, TrainConfig
    from budget_controller.train import train

    _setup()
    cfg = dataclass_from_args(TrainConfig, args)
    res = train(cfg, dataclass_from_args(EnvConfig, args, prefix="env_"), name=args.name)
    report = {"checkpoint": str(res.path), "seconds": res.seconds, "best": res.best}
    res.path.with_suffix(".json").write_text(
        json.dumps({**report, "history": res.history}, indent=2) + "\n"
    )
    print(json.dumps(report, indent=2))  # noqa: T201
    return 0


def _eval(args: argparse.Namespace) -> int:
    from budget_controller.config import EnvConfig, EvalConfig, TrainConfig
    from budget_controller.evaluate import run_eval

    _setup()
    report = run_eval(
        dataclass_from_args(EvalConfig, args),
        dataclass_from_args(EnvConfig, args, prefix="env_"),
        out=args.out,
        train_cfg=dataclass_from_args(TrainConfig, args, prefix="train_"),
    )
    summary = {
        "summary": report["summary"],
        "targets": report["targets"],
        "report": str(args.out / "report.json"),
    }
    print(json.dumps(summary, indent=2))  # noqa: T201
    return 0


def _live(args: argparse.Namespace) -> int:
    from budget_controller.config import LiveConfig
    from budget_controller.live import run_live

    _setup()
    report = run_live(dataclass_from_args(LiveConfig, args), out=args.out)
    print(json.dumps(report["summary"], indent=2))  # noqa: T201
    return 0

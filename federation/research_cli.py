"""``junction research <job>``: the offline research jobs, one subcommand per job.

The command group lives in ``federation/`` because it is the lowest layer that can reach both the
job packages (``training/research/``, which must not import ``federation``) and the Flower
backend that runs their federated rounds (:class:`federation.research_app.FlowerBackend`). The
jobs themselves are listed in ``training.research.jobs.JOBS``; a new job registers there, and its
config dataclass's fields become the subcommand's flags.

Usage::

    junction research avg-reward-q --quick --out reports/research/avg-reward-q
    junction research pretrained-fedavg --seeds 3 --out training/research/results/pretrained-fedavg
    junction research ns-nac --backend in-process --out /tmp/ns-nac
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from training.config_cli import add_dataclass_args, dataclass_from_args


def _run(args: argparse.Namespace) -> int:
    import torch

    from training.research.jobs import load_job, run_job

    torch.set_num_threads(args.threads)
    job = load_job(args.job)
    cfg = dataclass_from_args(job.config_cls, args)
    backend: Any = None
    if args.backend == "flower":
        from federation.research_app import FlowerBackend

        backend = FlowerBackend(verbose=args.verbose)
    seeds = args.seeds
    if seeds is None:
        quick_seeds = job.quick_seeds if args.quick else None
        seeds = quick_seeds if quick_seeds is not None else job.default_seeds
    report = run_job(
        args.job, cfg, Path(args.out), seeds=seeds, quick=args.quick,
        progress=not args.quiet, backend=backend,
    )  # fmt: skip
    verdicts = {c["id"]: c["holds"] for c in report["claims"]}
    sys.stdout.write(json.dumps({"job": args.job, "claims": verdicts, "out": args.out}) + "\n")
    return 0


def register(subparsers: Any) -> None:
    from training.research.jobs import JOBS, load_job

    parser = subparsers.add_parser(
        "research",
        help="offline research jobs (paper reproductions with a claims report)",
        description="Each job writes OUT/report.json (claims with the figures that decide them), "
        "OUT/summary.md and plots.",
    )
    jobs = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    for name in JOBS:
        job = load_job(name)
        p = jobs.add_parser(name, help=job.help, description=job.help)
        p.add_argument("--out", required=True, help="output directory")
        p.add_argument("--quick", action="store_true", help="the small run (<= 5 minutes)")
        p.add_argument(
            "--seeds", type=int, default=None,
            help=f"seeds 0..N-1 (default {job.default_seeds}"
            + (f"; {job.quick_seeds} with --quick" if job.quick_seeds is not None else "")
            + ")",
        )  # fmt: skip
        p.add_argument(
            "--backend", choices=("flower", "in-process"), default="flower",
            help="where federated rounds run (the same local functions either way)",
        )  # fmt: skip
        p.add_argument("--threads", type=int, default=1, help="torch threads")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--verbose", action="store_true", help="Flower's own log")
        add_dataclass_args(p, job.config_cls)
        p.set_defaults(handler=_run)

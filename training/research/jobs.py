"""The name registry of research jobs behind ``junction research <job>``.

Each entry maps a job name to a module that exposes ``JOB``, a :class:`ResearchJob`. Modules are
imported only when the command group is built or the job runs, and must keep their top-level
imports light (numpy at most): heavy libraries are imported inside ``run``.

A job's ``run`` receives ``backend``: the transport for its federated rounds (a
:class:`~training.research.federated.FedBackend`). The command group in
``federation/research_cli.py`` passes the Flower backend; tests pass the in-process one; jobs
that are not federated ignore it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.research.federated import FedBackend


def comma_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated flag value (``"a, b,"`` -> a, b)."""
    return [x.strip() for x in text.split(",") if x.strip()]


# name -> module exposing JOB (issue 16's jobs; the LLM-side jobs join here).
JOBS: dict[str, str] = {
    "avg-reward-q": "training.research.avg_reward_q.job",
    "flexmerge": "training.research.flexmerge.job",
    "ns-nac": "training.research.ns_nac.job",
    "pretrained-fedavg": "training.research.pretrained_fedavg.job",
    "ravan": "training.research.ravan.job",
    "pubswap": "training.research.pubswap.job",
    "misalignment": "training.research.misalignment.job",
}


@dataclass(frozen=True)
class ResearchJob:
    """One job: its config dataclass (flags come from its fields), the quick variant, the run."""

    name: str
    help: str
    config_cls: type[Any]
    quick: Callable[[Any], Any]  # full config -> the --quick config
    run: Callable[..., dict[str, Any]]  # run(cfg, out, *, seeds, quick, progress, backend)
    default_seeds: int = 3
    quick_seeds: int | None = None  # --quick without --seeds (None: default_seeds)


def load_job(name: str) -> ResearchJob:
    if name not in JOBS:
        raise KeyError(f"unknown research job {name!r}; known: {', '.join(sorted(JOBS))}")
    job: ResearchJob = importlib.import_module(JOBS[name]).JOB
    return job


def run_job(
    name: str,
    cfg: Any,
    out: Path,
    *,
    seeds: int,
    quick: bool,
    progress: bool = True,
    backend: FedBackend | None = None,
) -> dict[str, Any]:
    """Run a job from code; ``backend=None`` runs federated rounds in-process."""
    from training.research.federated import InProcessBackend

    job = load_job(name)
    if quick:
        cfg = job.quick(cfg)
    return job.run(
        cfg, out, seeds=list(range(seeds)), quick=quick, progress=progress,
        backend=backend or InProcessBackend(),
    )  # fmt: skip

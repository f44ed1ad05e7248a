"""Federated rounds for research jobs as plain data, independent of the transport.

A job describes each federated run as a :class:`FedExperiment`: a JSON-serialisable ``config``
from which every client rebuilds its own data, the initial global arrays, and one JSON config per
round. In each round every client runs the job's own local function (named by a dotted path, so a
Flower ClientApp can import it) from the global arrays and replies with new arrays and a weight;
the server takes the weighted mean, summed in client order.

:class:`InProcessBackend` runs the rounds in this process (tests, sweeps);
``federation.research_app.FlowerBackend`` runs the same experiments in Flower's Simulation
Engine, calling the same local function once per client, and gives the same numbers.

A job whose server does more than average (e.g. pools the clients' public-data responses) names
an ``aggregate`` function ``(config, round_cfg, replies, arrays) -> arrays``: it gets the replies in
client-id order and the round's starting global arrays, and returns the next global arrays; both
backends call it in place of :func:`weighted_mean`.

A local function has the signature ``(config, clients, arrays, round_cfg) -> [(arrays, weight)]``:
it takes a list of client ids so that in-process sweeps can vectorise over clients; each client's
result must depend only on its own id (per-client random streams), so one call with all clients
equals one call per client.

Usage::

    exp = FedExperiment("m4", "training.research.avg_reward_q.train:local_q_steps", cfg, 4,
                        {"q": q0}, rounds)
    (result,) = InProcessBackend().run([exp])
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Arrays = dict[str, np.ndarray]
LocalStep = Callable[
    [Mapping[str, Any], Sequence[int], Arrays, Mapping[str, Any]], list[tuple[Arrays, float]]
]


@dataclass
class FedExperiment:
    """One federated run: who takes part, where it starts, what each round asks."""

    name: str
    local: str  # "package.module:function", importable on every client
    config: dict[str, Any]  # JSON-serialisable; clients rebuild their data from it
    clients: int
    init: Arrays
    rounds: list[dict[str, Any]]  # one JSON-serialisable config per round
    keep_history: bool = True  # keep the global arrays after every round
    aggregate: str = ""  # "package.module:function" replacing the weighted mean; "" = FedAvg


@dataclass
class FedResult:
    name: str
    final: Arrays
    history: list[Arrays] = field(default_factory=list)
    backend: str = ""


class FedBackend(Protocol):
    name: str

    def run(
        self, experiments: Sequence[FedExperiment], *, progress: bool = False
    ) -> list[FedResult]: ...


def _import(path: str, what: str) -> Any:
    module, _, name = path.partition(":")
    if not name:
        raise ValueError(f"{what} {path!r} is not 'module:function'")
    return getattr(importlib.import_module(module), name)


def resolve_local(path: str) -> LocalStep:
    fn: LocalStep = _import(path, "local step")
    return fn


Aggregate = Callable[
    [Mapping[str, Any], Mapping[str, Any], Sequence[tuple[Arrays, float]], Arrays], Arrays
]


def resolve_aggregate(exp: FedExperiment) -> Aggregate:
    """The experiment's server step: its named ``aggregate``, or the weighted mean."""
    if not exp.aggregate:
        return lambda config, round_cfg, replies, arrays: weighted_mean(replies)  # noqa: ARG005
    fn: Aggregate = _import(exp.aggregate, "aggregate")
    return fn


def weighted_mean(replies: Sequence[tuple[Arrays, float]]) -> Arrays:
    """The FedAvg aggregate, summed in the order given (callers sort by client id)."""
    if not replies:
        raise ValueError("no client replied")
    total = float(sum(w for _, w in replies))
    if total <= 0:
        raise ValueError("client weights sum to zero")
    out: Arrays = {}
    for key in replies[0][0]:
        acc = np.zeros_like(replies[0][0][key], dtype=np.float64)
        for arrays, w in replies:
            acc = acc + (w / total) * arrays[key].astype(np.float64)
        out[key] = acc.astype(replies[0][0][key].dtype)
    return out


class InProcessBackend:
    """Runs every round in this process, all clients in one call to the local function."""

    name = "in-process"

    def run(
        self, experiments: Sequence[FedExperiment], *, progress: bool = False
    ) -> list[FedResult]:
        from tqdm import tqdm

        results = []
        total = sum(len(e.rounds) for e in experiments)
        with tqdm(total=total, desc="federated rounds", disable=not progress, leave=False) as bar:
            for exp in experiments:
                local = resolve_local(exp.local)
                aggregate = resolve_aggregate(exp)
                arrays = {k: np.array(v) for k, v in exp.init.items()}
                history = []
                clients = list(range(exp.clients))
                for rcfg in exp.rounds:
                    arrays = aggregate(
                        exp.config, rcfg, local(exp.config, clients, arrays, rcfg), arrays
                    )
                    if exp.keep_history:
                        history.append(arrays)
                    bar.update(1)
                results.append(FedResult(exp.name, arrays, history, self.name))
        return results


def flower_repeat(backend: Any, chosen: list[tuple[Any, Any]], *, progress: bool) -> dict[str, Any]:
    """Runs the ``chosen`` (experiment, in-process result) pairs again on ``backend`` and returns
    the largest absolute difference of any final array (``{"skipped": True}`` when the backend
    is the in-process one or nothing is chosen)."""
    if getattr(backend, "name", "in-process") == "in-process" or not chosen:
        return {"skipped": True}
    t0 = time.time()
    got = backend.run([e for e, _ in chosen], progress=progress)
    return {
        "backend": getattr(backend, "name", "?"),
        "runs": [e.name for e, _ in chosen],
        "max_abs_difference": max(
            float(np.abs(r.final[k] - g.final[k]).max())
            for (_, r), g in zip(chosen, got, strict=True)
            for k in r.final
        ),
        "seconds": time.time() - t0,
    }

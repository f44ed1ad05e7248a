"""Flower apps for the federated research jobs: the rounds of a ``FedExperiment`` on Flower.

A research job describes its federated runs as :class:`training.research.federated.FedExperiment`
(the local function by dotted path, a JSON config the clients rebuild their data from, the
initial arrays, one config per round). :class:`FlowerBackend` runs a list of them in one Flower
Simulation Engine session: the ServerApp sends each round's global arrays to the experiment's
clients (one SuperNode per client id, ``partition-id``), every ClientApp calls the job's local
function for its own id only, and the server takes the weighted mean in client-id order, exactly
as :class:`training.research.federated.InProcessBackend` does, so the two agree to the bit
(``tests/training/research/test_flower_agrees.py``).

Message (``train``): config record {experiment, local, round (JSON)}, array record of the global
arrays; reply: the client's arrays and ``metrics.weight``.

Usage::

    results = FlowerBackend().run(experiments, progress=True)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from training.research.federated import (
    Arrays,
    FedExperiment,
    FedResult,
    resolve_aggregate,
    resolve_local,
)

log = logging.getLogger(__name__)


def _record(arrays: Arrays) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _arrays(record: ArrayRecord) -> Arrays:
    return {k: v.numpy() for k, v in record.items()}


def make_research_client_app() -> ClientApp:
    """Each SuperNode is client ``partition-id`` of every experiment; it runs the named local step."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        conf = msg.content.config_records["config"]
        client = int(context.node_config.get("partition-id", 0))
        local = resolve_local(str(conf["local"]))
        exp_cfg = json.loads(str(conf["experiment"]))
        round_cfg = json.loads(str(conf["round"]))
        ((arrays, weight),) = local(
            exp_cfg, [client], _arrays(msg.content.array_records["arrays"]), round_cfg
        )
        content = RecordDict(
            {
                "arrays": _record(arrays),
                "metrics": MetricRecord({"client": client, "weight": float(weight)}),
            }
        )
        return Message(content=content, reply_to=msg)

    @app.query("hello")
    def hello(msg: Message, context: Context) -> Message:
        client = int(context.node_config.get("partition-id", 0))
        return Message(
            content=RecordDict({"metrics": MetricRecord({"client": client})}), reply_to=msg
        )

    return app


def _wait_clients(grid: Grid, n: int, timeout: float = 600) -> dict[int, int]:
    """client id -> node id for clients 0..n-1, asking nodes for their partition id until all
    have answered (a loaded machine can leave a first round of replies incomplete)."""
    import time

    deadline = time.monotonic() + timeout
    out: dict[int, int] = {}
    while len(out) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(out)} of {n} research clients answered in {timeout:.0f} s"
            )
        known = set(out.values())
        nodes = [node for node in sorted(grid.get_node_ids()) if node not in known]
        if not nodes:
            time.sleep(0.2)
            continue
        msgs = [
            Message(content=RecordDict({}), message_type="query.hello", dst_node_id=node)
            for node in nodes
        ]
        for r in grid.send_and_receive(msgs, timeout=60):
            if r.has_error():
                log.warning("node %d: %s", r.metadata.src_node_id, r.error.reason)
                continue
            out[int(r.content.metric_records["metrics"]["client"])] = r.metadata.src_node_id  # type: ignore[arg-type]
    return out


def run_experiments(
    grid: Grid, experiments: Sequence[FedExperiment], *, on_round: Any = None
) -> list[FedResult]:
    """The server side: every experiment's rounds, aggregated in client-id order."""
    nodes = _wait_clients(grid, max(e.clients for e in experiments))
    results = []
    for exp in experiments:
        arrays = {k: np.array(v) for k, v in exp.init.items()}
        history: list[Arrays] = []
        exp_json = json.dumps(exp.config)
        aggregate = resolve_aggregate(exp)
        for rcfg in exp.rounds:
            conf = ConfigRecord(
                {"experiment": exp_json, "local": exp.local, "round": json.dumps(rcfg)}
            )
            msgs = [
                Message(
                    content=RecordDict({"config": conf, "arrays": _record(arrays)}),
                    message_type="train",
                    dst_node_id=nodes[c],
                )
                for c in range(exp.clients)
            ]
            replies: dict[int, tuple[Arrays, float]] = {}
            for r in grid.send_and_receive(msgs, timeout=600):
                if r.has_error():
                    raise RuntimeError(
                        f"{exp.name}: node {r.metadata.src_node_id} failed: {r.error.reason}"
                    )
                m = r.content.metric_records["metrics"]
                replies[int(m["client"])] = (  # type: ignore[arg-type]
                    _arrays(r.content.array_records["arrays"]),
                    float(m["weight"]),  # type: ignore[arg-type]
                )
            missing = sorted(set(range(exp.clients)) - set(replies))
            if missing:  # never average over a partial round: results must match in-process
                raise RuntimeError(f"{exp.name}: clients {missing} did not reply in time")
            arrays = aggregate(exp.config, rcfg, [replies[c] for c in sorted(replies)], arrays)
            if exp.keep_history:
                history.append(arrays)
            if on_round is not None:
                on_round()
        results.append(FedResult(exp.name, arrays, history, "flower"))
    return results


class FlowerBackend:
    """Runs experiments in Flower's Simulation Engine (Ray), one SuperNode per client id."""

    name = "flower"

    def __init__(self, *, verbose: bool = False) -> None:
        self.verbose = verbose

    def run(
        self, experiments: Sequence[FedExperiment], *, progress: bool = False
    ) -> list[FedResult]:
        from tqdm import tqdm

        from federation.simulate import simulate_in_process

        # Ray warns (FutureWarning) about a GPU env-var default it is changing; we use no GPUs.
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        if not experiments:
            return []
        sink: dict[str, list[FedResult]] = {}
        bar = tqdm(
            total=sum(len(e.rounds) for e in experiments), desc="flower rounds",
            disable=not progress, file=sys.stderr, leave=False,
        )  # fmt: skip
        server = ServerApp()

        @server.main()
        def main(grid: Grid, context: Context) -> None:  # noqa: ARG001 - Flower's signature
            sink["results"] = run_experiments(grid, experiments, on_round=lambda: bar.update(1))

        try:
            simulate_in_process(
                server_app=server,
                client_app=make_research_client_app(),
                num_supernodes=max(e.clients for e in experiments),
                verbose=self.verbose,
            )
        finally:
            bar.close()
        if "results" not in sink:
            raise RuntimeError("the Flower research run did not finish (see the Flower log)")
        return sink["results"]

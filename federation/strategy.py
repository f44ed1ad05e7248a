"""FedAvg for the MLP router with per-head aggregation, seeded sampling and robust checks.

A subclass of Flower's message-based ``FedAvg``: Flower's ``Strategy.start`` runs the rounds;
this class decides who trains (a sample of ``participation`` x clients, less those that drop out
with probability ``client-dropout``, both drawn from the run seed and the round, so a run is
reproducible) and how replies are combined (``aggregate.aggregate``, on replies sorted by client
id so Ray's reply order cannot change a sum: each array averaged over the clients that trained
it, weighted by its rows; malformed updates rejected with a logged reason; clipping or a trimmed
mean; then the server optimiser's step on the shared trunk, ``server-opt``). Federated evaluation
runs once, after the last round.

Usage::

    strategy = RouterFedAvg(cfg, clients=node_to_client, num_rounds=30)
    result = strategy.start(grid, initial_arrays, num_rounds=30, train_config=conf)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from federation.aggregate import ServerOptimizer, Update, aggregate
from federation.client_app import arrays_of, num, nums, record_of
from federation.config import FederationConfig

log = logging.getLogger(__name__)


class RouterFedAvg(FedAvg):
    """Per-parameter-group FedAvg. Usage: ``RouterFedAvg(cfg, clients={node: client})``."""

    def __init__(
        self, cfg: FederationConfig, *, clients: Mapping[int, int], num_rounds: int
    ) -> None:
        super().__init__(
            fraction_train=cfg.participation,
            fraction_evaluate=1.0,
            min_train_nodes=1,
            min_evaluate_nodes=1,
            min_available_nodes=len(clients),
        )
        self.cfg = cfg
        self.clients = dict(clients)  # node id -> client id (partition id)
        self.num_rounds = num_rounds
        self._global: dict[str, np.ndarray] = {}
        self.history: list[dict[str, Any]] = []
        self.client_auc: dict[int, float] = {}
        self.server_opt = ServerOptimizer(
            cfg.server_opt, lr=cfg.server_lr, beta=cfg.server_momentum
        )

    def _sample(self, server_round: int) -> list[int]:
        nodes = sorted(self.clients, key=lambda n: self.clients[n])  # by client id: reproducible
        k = max(1, int(round(self.cfg.participation * len(nodes))))
        rng = np.random.default_rng(self.cfg.seed * 7919 + server_round)
        picked = sorted(rng.choice(len(nodes), size=k, replace=False).tolist())
        stay = rng.random(len(picked)) >= self.cfg.client_dropout
        if not stay.any():  # a round needs one client
            stay[0] = True
        return [nodes[i] for i, s in zip(picked, stay, strict=True) if s]

    def _messages(
        self, arrays: ArrayRecord, config: ConfigRecord, nodes: Iterable[int], kind: str
    ) -> list[Message]:
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [Message(content=record, message_type=kind, dst_node_id=n) for n in nodes]

    def configure_train(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,  # noqa: ARG002 (the nodes come from the hello round)
    ) -> Iterable[Message]:
        self._global = arrays_of(arrays)
        config["server-round"] = server_round
        return self._messages(arrays, config, self._sample(server_round), MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        updates: list[Update] = []
        losses: list[tuple[int, float]] = []
        for msg in valid:
            m = msg.content.metric_records["metrics"]
            client = int(num(m, "client"))
            rows = {f"head:{j}": r for j, r in enumerate(nums(m, "head-rows")) if r > 0}
            if num(m, "trunk-rows") > 0:
                rows["trunk"] = num(m, "trunk-rows")
            recs = msg.content.array_records
            arrays = arrays_of(recs["arrays"]) if "arrays" in recs else {}
            updates.append(Update(client=str(client), arrays=arrays, group_rows=rows))
            losses.append((client, num(m, "loss")))
        updates.sort(key=lambda u: int(u.client))  # reply order varies; sums must not
        mean_loss = float(np.mean([x for _, x in sorted(losses)])) if losses else float("nan")
        new, report = aggregate(
            self._global,
            updates,
            mode=self.cfg.robust,
            clip_factor=self.cfg.clip_factor,
            trim_frac=self.cfg.trim_frac,
        )
        new = self.server_opt.step(self._global, new)
        self.history.append(
            {
                "round": server_round,
                "clients": sorted(int(c) for c in report.accepted),
                "rejected": report.rejected,
                "clipped": report.clipped,
                "failures": len(errors),
                "loss": mean_loss,
            }
        )
        metrics = MetricRecord({"loss": mean_loss if losses else -1.0})
        return record_of(new), metrics

    def configure_evaluate(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,  # noqa: ARG002
    ) -> Iterable[Message]:
        if server_round != self.num_rounds:  # evaluate once, on the final router
            return []
        config["server-round"] = server_round
        nodes = sorted(self.clients, key=lambda n: self.clients[n])
        return self._messages(arrays, config, nodes, MessageType.EVALUATE)

    def aggregate_evaluate(
        self,
        server_round: int,  # noqa: ARG002
        replies: Iterable[Message],
    ) -> MetricRecord | None:
        valid, _ = self._check_and_log_replies(replies, is_train=False, validate=False)
        if not valid:
            return None
        n_total, auc_sum = 0.0, 0.0
        for msg in valid:
            m = msg.content.metric_records["metrics"]
            auc, n = num(m, "auc"), num(m, "num-examples")
            self.client_auc[int(num(m, "client"))] = auc
            n_total += n
            auc_sum += n * auc
        return MetricRecord({"auc": auc_sum / n_total})

"""The Flower ClientApp: a client's side of federated MLP and K-means router training.

Every message carries the federation's candidate ``models`` in its config; the client aligns its
own logs (``data_source.py``) to them. Handlers (message type -> what the client returns):

- ``query.hello``: its client id and row counts, and the moments of its log costs (so the server
  standardises costs as centralised training does);
- ``train``: one FedAvg round of the MLP router (``local.mlp_round`` around ``local_train``): the
  trunk and the heads of its logged models, with the rows behind each; with ``only-model`` set,
  that new model's head alone, on a calibration set (model expansion);
- ``query.centroids`` / ``query.cells``: the two K-means passes;
- ``evaluate``: the global router's AUC on the client's own test split.

Run configuration comes from ``context.run_config`` (``[tool.flwr.app.config]``);
:func:`make_client_app` can layer overrides on it, which is how ``junction federate simulate``
passes its flags into the Simulation Engine.

Usage (what ``pyproject.toml`` points Flower at)::

    clientapp = "federation.client_app:app"
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation.config import FederationConfig
from federation.data_source import client_data
from federation.local import (
    NetSpec,
    kmeans_pass1,
    kmeans_pass2,
    log_cost_moments,
    mlp_round,
    mlp_router_from_arrays,
    poison,
)
from federation.partition import ClientData
from federation.routers import router_auc
from training.data.matrix import EvalMatrix
from training.routers.mlp import MLPConfig

log = logging.getLogger(__name__)


def arrays_of(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def record_of(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def num(record: Any, key: str, default: float | None = None) -> float:
    """A number from a Flower Config/MetricRecord (their value unions defeat the type checker)."""
    if default is not None and key not in record:
        return default
    return float(record[key])


def nums(record: Any, key: str) -> list[float]:
    return [float(v) for v in record[key]]


def _models(config: Any) -> list[str]:
    return [str(m) for m in config["models"]]


def calibration_seed(run_seed: int, client: int) -> int:
    """The seed of a client's calibration set: the run seed and the client, never the round, so
    the set is drawn once and every round (and both router kinds) sees the same rows."""
    return run_seed * 1_000_003 + 500_009 + client


def calibration_set(data: ClientData, model: int, frac: float, seed: int) -> EvalMatrix:
    """Rows that carry the new model's label: a fixed ``frac`` sample of the training prompts
    evaluated on it (experiments reveal them from the full labels; ``seed`` from
    :func:`calibration_seed`), or the client's own rows of it."""
    full = data.train_full
    if full is None:
        return data.train
    rng = np.random.default_rng(seed)
    n = max(1, round(full.num_queries * frac))
    rows = np.sort(rng.permutation(full.num_queries)[:n])
    sub = full.subset(rows)
    keep = np.zeros_like(sub.observed)
    keep[:, model] = sub.observed[:, model]
    nan = np.float32(np.nan)
    return replace(
        sub,
        scores=np.where(keep, sub.scores, nan),
        cost_usd=np.where(keep, sub.cost_usd, nan),
    )


def spec_of(cfg: FederationConfig) -> NetSpec:
    return NetSpec(cfg.head, cfg.model_dim, cfg.k_global)


def round_seed(run_seed: int, rnd: int, client: int) -> int:
    """The seed of one client's local round (shuffles, dropout masks): run seed, round, client."""
    return run_seed * 1_000_003 + rnd * 1009 + client


def cost_range_of(conf: Any) -> tuple[float, float] | None:
    """The report's common cost range when the server sent one."""
    if "cost-lo" in conf and "cost-hi" in conf:
        return num(conf, "cost-lo"), num(conf, "cost-hi")
    return None


def make_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """A ClientApp whose run config is ``context.run_config`` updated with ``overrides``."""
    app = ClientApp()
    extra = dict(overrides or {})

    def setup(msg: Message, context: Context) -> tuple[FederationConfig, ClientData, ConfigRecord]:
        torch.set_num_threads(1)
        cfg = FederationConfig.from_run_config({**context.run_config, **extra})
        conf = msg.content.config_records["config"]
        return cfg, client_data(cfg, context.node_config, _models(conf)), conf

    def reply(msg: Message, **records: Any) -> Message:
        return Message(content=RecordDict(records), reply_to=msg)

    @app.query("hello")
    def hello(msg: Message, context: Context) -> Message:
        _, data, _ = setup(msg, context)
        n, s, s2 = log_cost_moments(data.train)
        obs = data.train.observed
        metrics = MetricRecord(
            {
                # per model: logged cost sum and rows, for the pool's common cost range
                "model-cost-sum": np.where(obs, data.train.cost_usd, 0.0).sum(0).tolist(),
                "model-cost-n": obs.sum(0).astype(float).tolist(),
                "client": data.client,
                "num-examples": int(data.train.observed.sum()),
                "num-test": data.test.num_queries,
                "cost-n": n,
                "cost-sum": s,
                "cost-sum2": s2,
            }
        )
        return reply(msg, metrics=metrics)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg, data, conf = setup(msg, context)
        models = _models(conf)
        mcfg = MLPConfig(**json.loads(str(conf["mlp-config"])))
        glob = arrays_of(msg.content.array_records["arrays"])
        router = mlp_router_from_arrays(
            glob,
            cfg=mcfg,
            models=models,
            cost_mu=num(conf, "cost-mu"),
            cost_sigma=num(conf, "cost-sigma"),
            spec=spec_of(cfg),
        )
        rnd = int(num(conf, "server-round"))
        only = int(num(conf, "only-model", -1.0))
        seed = round_seed(cfg.seed, rnd, data.client)
        train_rows = (
            calibration_set(
                data,
                only,
                num(conf, "calibration-frac", 0.1),
                calibration_seed(cfg.seed, data.client),
            )  # fmt: skip
            if only >= 0
            else data.train
        )
        sent, rows, loss = mlp_round(
            router, train_rows, epochs=cfg.expand_epochs if only >= 0 else cfg.local_epochs,
            batch_size=cfg.batch_size, lr=cfg.lr,
            seed=seed, only_model=only if only >= 0 else None, prox_mu=cfg.prox_mu,
            optimizer=cfg.client_opt,
        )  # fmt: skip
        if cfg.attack != "none" and data.client == cfg.attack_client:
            log.warning("client %d injects the %r attack", data.client, cfg.attack)
            sent = poison(sent, glob, cfg.attack)
        head_rows = [rows.get(f"head:{j}", 0.0) for j in range(len(models))]
        metrics = MetricRecord(
            {
                "client": data.client,
                "num-examples": int(rows.get("trunk", sum(head_rows))),
                "trunk-rows": float(rows.get("trunk", 0.0)),
                "head-rows": head_rows,
                "loss": loss if np.isfinite(loss) else -1.0,
            }
        )
        return reply(msg, arrays=record_of(sent), metrics=metrics)

    @app.query("centroids")
    def centroids(msg: Message, context: Context) -> Message:
        cfg, data, _ = setup(msg, context)
        centres, counts = kmeans_pass1(data.train, cfg.k_local, seed=cfg.seed + data.client)
        return reply(
            msg,
            arrays=record_of({"centres": centres, "counts": counts}),
            metrics=MetricRecord({"client": data.client, "num-examples": data.train.num_queries}),
        )

    @app.query("cells")
    def cells(msg: Message, context: Context) -> Message:
        cfg, data, conf = setup(msg, context)
        centres = msg.content.array_records["arrays"]["centres"].numpy()
        only = int(num(conf, "only-model", -1.0))
        rows = (  # model expansion: the new model's calibration rows only
            calibration_set(
                data,
                only,
                num(conf, "calibration-frac", 0.1),
                calibration_seed(cfg.seed, data.client),
            )  # fmt: skip
            if only >= 0
            else data.train
        )
        sum_acc, sum_cost, counts = kmeans_pass2(rows, centres)
        if cfg.attack != "none" and data.client == cfg.attack_client:
            log.warning("client %d injects the %r attack", data.client, cfg.attack)
            if cfg.attack == "nan":
                sum_acc = np.full_like(sum_acc, np.nan)
            else:
                sum_acc, sum_cost, counts = sum_acc * 100, sum_cost * 100, counts * 100
        return reply(
            msg,
            arrays=record_of({"sum-acc": sum_acc, "sum-cost": sum_cost, "counts": counts}),
            metrics=MetricRecord(
                {"client": data.client, "num-examples": int(data.train.observed.sum())}
            ),
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg, data, conf = setup(msg, context)
        router = mlp_router_from_arrays(
            arrays_of(msg.content.array_records["arrays"]),
            cfg=MLPConfig(**json.loads(str(conf["mlp-config"]))),
            models=_models(conf),
            cost_mu=num(conf, "cost-mu"),
            cost_sigma=num(conf, "cost-sigma"),
            spec=spec_of(cfg),
        )
        auc = router_auc(router, data.test, cost_range_of(conf))
        return reply(
            msg,
            metrics=MetricRecord(
                {"client": data.client, "num-examples": data.test.num_queries, "auc": auc}
            ),
        )

    return app


app = make_client_app()

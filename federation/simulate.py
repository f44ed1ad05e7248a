"""``junction federate simulate``: the paper's experiment in Flower's Simulation Engine.

One run: partition the logs across clients (``partition.py``), train the federated router with
the real Flower apps in the Simulation Engine (Ray), and compare it on the global test set and on
each client's own test set with the centralised router (all clients' logged cells pooled) and with
each client's local router (its own cells only, routing among the models it has logged). Each
client's personalised mixture of federated and local is evaluated too. Writes ``report.json``,
``summary.md`` and plots.

Compute is matched: the centralised and local MLPs train for rounds x participation x local
epochs epochs, what an average client's data sees in FedAvg. K-means: K = 30 centralised, 8 local,
15 local / 20 global federated (the paper's code).

Usage::

    report = simulate(FederationConfig(logs="routerbench", router="kmeans"), Path("out"))
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from federation.config import FederationConfig
from federation.data_source import experiment_partition
from federation.partition import ClientData, global_test, pooled_train
from federation.routers import MaskedRouter, PersonalisedRouter, router_auc, router_curve
from training.data.matrix import EvalMatrix
from training.routers.base import Router
from training.routers.kmeans import KMeansConfig, KMeansRouter, train_kmeans_router
from training.routers.mlp import MLPConfig, train_mlp_router

log = logging.getLogger(__name__)

CENTRAL_K, LOCAL_K = 30, 8


def run_flower_simulation(
    cfg: FederationConfig, out_dir: Path, *, progress: bool = True, verbose: bool = False
) -> Any:
    """Run the ServerApp and ClientApps in Flower's Simulation Engine; returns the FederatedRun."""
    import torch
    from flwr.simulation import run_simulation

    from federation.client_app import make_client_app
    from federation.server_app import make_server_app

    torch.set_num_threads(1)
    overrides = {**cfg.to_run_config(), "out-dir": str(out_dir), "server-eval": True}
    total = (
        cfg.rounds
        + (cfg.expand_rounds if cfg.expand_model and cfg.router == "mlp" else 0)
        + (cfg.join_rounds if cfg.new_clients else 0)
    )
    bar = tqdm(
        total=total if cfg.router == "mlp" else 2,
        desc=f"federated {cfg.router}",
        disable=not progress,
        file=sys.stderr,
    )

    def on_round(stage: str, rnd: int, auc: float | None) -> None:
        if rnd > 0:
            bar.update(1)
            bar.set_postfix(stage=stage, auc=f"{auc:.4f}" if auc is not None else "-")

    sink: dict[str, Any] = {}
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    if not verbose:
        flwr_log.setLevel(logging.WARNING)
    try:
        run_simulation(
            server_app=make_server_app(overrides, on_round=on_round, sink=sink),
            client_app=make_client_app(overrides),
            num_supernodes=cfg.clients,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": 2, "num_gpus": 0, "logging_level": "ERROR"},
            },
        )
    finally:
        flwr_log.setLevel(level)
        bar.close()
    if "run" not in sink:
        raise RuntimeError("the federated run did not finish (see the Flower log above)")
    return sink["run"]


def local_epochs_matched(cfg: FederationConfig) -> int:
    return max(1, round(cfg.rounds * cfg.participation * cfg.local_epochs))


def train_local(cfg: FederationConfig, data: ClientData) -> Router:
    """A client's own router over the models it logged (others: never chosen)."""
    known = data.logged_models
    if cfg.router == "mlp":
        mcfg = MLPConfig(
            hidden=cfg.hidden, lr=cfg.lr, batch_size=cfg.batch_size,
            epochs=local_epochs_matched(cfg), seed=cfg.seed + 1 + data.client,
        )  # fmt: skip
        return MaskedRouter(train_mlp_router(data.train, mcfg, progress=False), known)
    sub = data.train.select_models([data.train.models[j] for j in known])
    kr = train_kmeans_router(sub, KMeansConfig(k=LOCAL_K, seed=cfg.seed + data.client))
    m = len(data.train.models)
    acc = np.zeros((len(kr.centres), m), dtype=np.float32)
    cost = np.ones((len(kr.centres), m), dtype=np.float32)
    counts = np.zeros((len(kr.centres), m), dtype=np.float32)
    acc[:, known], cost[:, known], counts[:, known] = kr.acc, kr.cost, kr.counts
    full = KMeansRouter(kr.cfg, list(data.train.models), kr.centres, acc, cost, counts)
    return MaskedRouter(full, known)


def personalise(cfg: FederationConfig, fed: Router, data: ClientData, local: Router) -> Router:
    """The per-model inverse-error mixture; errors on a held-out quarter of the client's rows,
    the local side measured by a local router refitted without them."""
    rng = np.random.default_rng(cfg.seed + 7 * data.client + 1)
    order = rng.permutation(data.train.num_queries)
    n_cal = max(1, data.train.num_queries // 4)
    cal, rest = data.train.subset(np.sort(order[:n_cal])), data.train.subset(np.sort(order[n_cal:]))
    local_cal = train_local(cfg, replace(data, train=rest)) if rest.observed.any() else local
    return PersonalisedRouter.fit(_as_full(fed, data.train), local, cal, local_for_errors=local_cal)


def train_central(cfg: FederationConfig, pooled: EvalMatrix) -> Router:
    if cfg.router == "mlp":
        mcfg = MLPConfig(
            hidden=cfg.hidden, lr=cfg.lr, batch_size=cfg.batch_size,
            epochs=local_epochs_matched(cfg), seed=cfg.seed,
        )  # fmt: skip
        return train_mlp_router(pooled, mcfg, progress=False)
    return train_kmeans_router(pooled, KMeansConfig(k=CENTRAL_K, seed=cfg.seed))


def _test_for(router: Router, test: EvalMatrix) -> EvalMatrix:
    return test if list(router.models) == list(test.models) else test.select_models(router.models)


def simulate(
    cfg: FederationConfig, out: Path, *, progress: bool = True, verbose: bool = False
) -> dict[str, Any]:
    """The whole experiment; writes ``out/report.json``, ``out/summary.md`` and plots."""
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    parts = experiment_partition(cfg)
    test = global_test(parts)
    if cfg.expand_model:  # the new model's labels enter only through the expansion step
        parts = [
            replace(
                p,
                train=p.train.select_models([m for m in p.train.models if m != cfg.expand_model]),
            )
            for p in parts
        ]
    log.info("partitioned the logs over %d clients", cfg.clients)
    run = run_flower_simulation(cfg, out / "federated", progress=progress, verbose=verbose)
    fed: Router = run.routers["final"]
    step = tqdm(total=2 + cfg.clients, desc="baselines", disable=not progress, file=sys.stderr)
    central = train_central(cfg, pooled_train(parts))
    step.update(1)
    local: list[Router] = []
    for p in parts:
        local.append(train_local(cfg, p))
        step.update(1)
    personal = [personalise(cfg, fed, p, loc) for p, loc in zip(parts, local, strict=True)]
    step.update(1)
    step.close()

    base_test = _test_for(central, test)
    auc: dict[str, Any] = {
        "federated": router_auc(fed, _test_for(fed, test)),
        "centralized": router_auc(central, base_test),
        "local": [router_auc(r, base_test) for r in local],
    }
    client_auc: dict[str, list[float]] = {"federated": [], "centralized": [], "local": []}
    client_auc["personalized"] = []
    for p, loc, per in zip(parts, local, personal, strict=True):
        ct = _test_for(central, p.test)
        client_auc["federated"].append(router_auc(fed, _test_for(fed, p.test)))
        client_auc["centralized"].append(router_auc(central, ct))
        client_auc["local"].append(router_auc(loc, ct))
        client_auc["personalized"].append(router_auc(per, ct))
    fed_vs_local = [
        f > loc for f, loc in zip(client_auc["federated"], client_auc["local"], strict=True)
    ]
    worse = [
        min(f, loc) for f, loc in zip(client_auc["federated"], client_auc["local"], strict=True)
    ]
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "data": {
            "logs": cfg.logs,
            "models": list(test.models),
            "queries_test": test.num_queries,
            "clients": [
                {
                    "client": p.client,
                    "train_rows": int(p.train.observed.sum()),
                    "test_queries": p.test.num_queries,
                    "logged_models": len(p.logged_models),
                }
                for p in parts
            ],
        },
        "auc": auc,
        "client_auc": client_auc,
        "checks": {
            "federated_minus_centralized": auc["federated"] - auc["centralized"],
            "federated_above_every_local": bool(auc["federated"] > max(auc["local"])),
            "clients_federated_beats_local": int(sum(fed_vs_local)),
            "personalized_at_least_worse_of_two": int(
                sum(
                    per >= w - 1e-12
                    for per, w in zip(client_auc["personalized"], worse, strict=True)
                )
            ),
        },
        "rounds": run.history.get("rounds", []),
        "aggregation": run.history.get("aggregation", {}),
        "seconds": time.time() - t0,
    }
    if cfg.expand_model:
        base = run.routers["base"]
        report["expansion"] = {
            "model": cfg.expand_model,
            "before": router_auc(base, _test_for(base, test)),
            "after": auc["federated"],
        }
    if cfg.new_clients and "before_join" in run.routers:
        before = run.routers["before_join"]
        after = run.routers.get("base", fed)  # with an expansion too: the router before it
        new = parts[cfg.clients - cfg.new_clients :]
        report["new_clients"] = {
            "clients": [p.client for p in new],
            "before": router_auc(before, _test_for(before, test)),
            "after": router_auc(after, _test_for(after, test)),
            "before_on_new_clients": [router_auc(before, _test_for(before, p.test)) for p in new],
            "after_on_new_clients": [router_auc(after, _test_for(after, p.test)) for p in new],
        }
    curves = {
        "federated": router_curve(fed, _test_for(fed, test)),
        "centralized": router_curve(central, base_test),
    }
    best = int(np.argmax(auc["local"]))
    worst = int(np.argmin(auc["local"]))
    curves[f"local (best, client {best})"] = router_curve(local[best], base_test)
    curves[f"local (worst, client {worst})"] = router_curve(local[worst], base_test)
    report["curves"] = {k: {"cost": c.tolist(), "acc": a.tolist()} for k, (c, a) in curves.items()}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    from federation.report import write_plots, write_summary

    write_plots(report, test, out)
    write_summary(report, out / "summary.md")
    return report


def _as_full(fed: Router, train: EvalMatrix) -> Router:
    """The federated router over the client's model columns (for the personalised mixture)."""
    if list(fed.models) == list(train.models):
        return fed
    from training.routers.base import RouterOutput, predict_for

    class _Cols:
        name = fed.name
        models = list(train.models)

        def predict(self, X: np.ndarray) -> RouterOutput:
            return predict_for(fed, X, self.models)

    return _Cols()

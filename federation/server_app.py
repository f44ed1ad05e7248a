"""The Flower ServerApp: federated training of the MLP router (FedAvg) or the K-means router
(two passes), saved as a self-describing router checkpoint in ``out-dir``.

Flow:
1. ``query.hello`` to every client: client ids (for reproducible sampling) and log-cost moments.
2. MLP: Flower's ``Strategy.start`` with :class:`~federation.strategy.RouterFedAvg` for
   ``rounds`` rounds (``head=embedding`` first runs the K-means router's two query rounds, whose
   per-(cluster, model) sums give the fixed model embeddings, ``local.model_embedding``). With ``expand-model`` set, that model is left out first and then added:
   a new head, trained alone for ``expand-rounds`` rounds on the clients' calibration rows.
   With ``new-clients`` N, the last N clients join only after ``rounds`` rounds, for
   ``join-rounds`` more rounds with everyone (``router_before_join.pt`` keeps the router before).
   K-means: ``query.centroids`` (local K-means), weighted global K-means on the pooled centres,
   ``query.cells`` (per-(cluster, model) sums), aggregated by counts; an expansion adds the new
   model's column from another ``query.cells`` on the clients' calibration rows.
3. ``out-dir/router.pt`` (and ``router_base.pt`` before an expansion), ``out-dir/history.json``.
   A saved MLP router has per-model heads; a model no training client logged gets the
   never-chosen head (``training.routers.mlp.never_chosen``; ``history["unlogged_models"]``),
   not its untrained random one.

Usage (what ``pyproject.toml`` points Flower at)::

    serverapp = "federation.server_app:app"
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from federation.client_app import arrays_of, num, nums, record_of, spec_of
from federation.config import FederationConfig
from federation.data_source import (
    experiment_partition,
    experiment_validation,
    federation_models,
)
from federation.local import (
    as_plain,
    kmeans_from_stats,
    model_embedding,
    net_arrays,
    new_net,
    pooled_moments,
)
from federation.partition import global_test
from federation.routers import MaskedRouter, router_auc, router_aucs
from federation.strategy import RouterFedAvg
from training.evaluation.metrics import pool_cost_range
from training.routers.kmeans import KMeansConfig, KMeansRouter, choose_prior, global_centres
from training.routers.mlp import MLPConfig, MLPRouter, never_chosen

log = logging.getLogger(__name__)
VAL_HALVES_SALT = 7919  # seeds the split of the validation queries into halves (with the run seed)

RoundHook = Callable[[str, int, float | None], None]


def ask(
    grid: Grid,
    nodes: list[int],
    action: str,
    config: ConfigRecord,
    arrays: ArrayRecord | None = None,
    timeout: float = 600,
) -> list[Message]:
    """Send one query to each node and return the replies without errors (errors are logged)."""
    content: dict[str, Any] = {"config": config}
    if arrays is not None:
        content["arrays"] = arrays
    msgs = [
        Message(content=RecordDict(content), message_type=f"query.{action}", dst_node_id=n)
        for n in nodes
    ]
    out = []
    for r in grid.send_and_receive(msgs, timeout=timeout):
        if r.has_error():
            log.warning("%s: node %d failed: %s", action, r.metadata.src_node_id, r.error.reason)
        else:
            out.append(r)
    return out


def wait_for_nodes(grid: Grid, n: int, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {n} clients connected in {timeout:.0f} s")
        time.sleep(0.5)
    return nodes


class FederatedRun:
    """One ServerApp run: everything it learns and records. Usage: ``FederatedRun(cfg).run(grid)``."""

    def __init__(self, cfg: FederationConfig, *, on_round: RoundHook | None = None) -> None:
        self.cfg = cfg
        self.on_round = on_round
        self.history: dict[str, Any] = {"rounds": [], "config": asdict(cfg)}
        self.routers: dict[str, Any] = {}
        self._eval: Any = None
        self._eval_range: tuple[float, float] | None = None
        self._val: Any = None
        self._val_range: tuple[float, float] | None = None
        self._val_rows: list[np.ndarray] = []  # all validation queries, then the two halves
        self.cost_range: tuple[float, float] | None = None  # from the clients' hello
        self.logged: dict[int, np.ndarray] = {}  # client -> its logged rows per model (hello)

    # ---- helpers
    def _load_eval(self) -> None:
        """The experimenter's global test set and its pool cost range (simulation only), once."""
        if self._eval is None:
            self._eval = global_test(experiment_partition(self.cfg))
            self._eval_range = pool_cost_range(self._eval.cost_usd)

    def _as_saved(self, router: Any) -> Any:
        """The router as it is saved and reported: a model no client logged (its head never
        trained) is never chosen. Per-round figures score this, not the raw net."""
        counts = list(self.logged.values())
        if not counts:
            return router
        seen = np.sum(counts, axis=0)
        keep = [j for j in range(len(router.models)) if j >= len(seen) or seen[j] > 0]
        return router if len(keep) == len(router.models) else MaskedRouter(router, keep)

    def _server_auc(self, router: Any) -> float | None:
        if not self.cfg.server_eval:
            return None
        self._load_eval()
        test = self._eval
        if list(router.models) != list(test.models):
            test = test.select_models(list(router.models))
        return router_auc(self._as_saved(router), test, self._eval_range)

    def _server_val_auc(self, router: Any) -> float | None:
        """The router's AUC on the server's own validation set (the log's validation split, set
        aside before the clients' partition; simulation only, on its own pool's cost range):
        recorded per round, never used to train; under ``select-round=validation`` the saved
        router is the training round where it is highest (the centralised baseline's early
        stopping uses the same set)."""
        aucs = self._server_val_aucs(router, halves=False)
        return None if aucs is None else aucs[0]

    def _server_val_aucs(self, router: Any, *, halves: bool) -> list[float] | None:
        """[the whole validation set's AUC] and, with ``halves``, each of two fixed halves'
        (a seeded split of its queries, on the whole set's cost range), from one prediction:
        for :func:`federation.simulate.crossfit_val_auc`, where a round chosen on one half is
        scored on the other, free of the choice's own luck. None without ``server-eval``."""
        if not self.cfg.server_eval:
            return None
        if self._val is None:
            self._val = experiment_validation(self.cfg)
            self._val_range = pool_cost_range(self._val.cost_usd)  # its own: no test statistic
            n = len(self._val.query_ids)
            order = np.random.default_rng([self.cfg.seed, VAL_HALVES_SALT]).permutation(n)
            self._val_rows = [np.arange(n), np.sort(order[0::2]), np.sort(order[1::2])]
        val = self._val
        if list(router.models) != list(val.models):
            val = val.select_models(list(router.models))
        assert self._val_range is not None
        rows = self._val_rows if halves else self._val_rows[:1]
        return router_aucs(self._as_saved(router), val, self._val_range, rows)

    def _hook(self, stage: str, rnd: int, auc: float | None) -> None:
        if self.on_round is not None:
            self.on_round(stage, rnd, auc)

    def run(self, grid: Grid) -> dict[str, Any]:
        cfg = self.cfg
        all_models = federation_models(cfg)
        expand = cfg.expand_model
        if expand and expand not in all_models:
            raise ValueError(f"expand-model {expand!r} is not among the models {all_models}")
        models = [m for m in all_models if m != expand] if expand else all_models
        nodes = wait_for_nodes(grid, cfg.clients)
        hello = ask(grid, nodes, "hello", ConfigRecord({"models": models}))
        if len(hello) < len(nodes):
            raise RuntimeError(f"{len(nodes) - len(hello)} client(s) failed to start")
        clients = {
            r.metadata.src_node_id: int(num(r.content.metric_records["metrics"], "client"))
            for r in hello
        }
        self.history["clients"] = sorted(clients.values())
        self.cost_range = self._pool_range(hello)
        for r in hello:
            rec = r.content.metric_records["metrics"]
            if "model-cost-n" in rec:
                self.logged[int(num(rec, "client"))] = np.asarray(nums(rec, "model-cost-n"))
        if cfg.router == "mlp":
            m = [r.content.metric_records["metrics"] for r in hello]
            mu, sigma = pooled_moments(
                [(num(x, "cost-n"), num(x, "cost-sum"), num(x, "cost-sum2")) for x in m]
            )
            if cfg.new_clients:  # the last new-clients join after the first `rounds` rounds
                first = {n: c for n, c in clients.items() if c < cfg.clients - cfg.new_clients}
                if not first or len(first) == len(clients):
                    raise ValueError(f"new-clients must be in 1..{cfg.clients - 1}")
                mlp = self._mlp(grid, first, models, mu, sigma)
                self.routers["before_join"] = MLPRouter(
                    copy.deepcopy(mlp.net), mlp.cfg, list(mlp.models), mlp.cost_mu, mlp.cost_sigma
                )
                mlp = self._fedavg(grid, clients, mlp, cfg.join_rounds, "join")
            else:
                mlp = self._mlp(grid, clients, models, mu, sigma)
            if expand:
                self.routers["base"] = mlp
                mlp = self._expand(grid, clients, mlp, expand)
            self.routers["final"] = mlp
            self._no_untrained_heads(clients)
        else:
            self.routers["final"] = self._kmeans(grid, list(clients), models, expand)
        return self.history

    def _no_untrained_heads(self, clients: Mapping[int, int]) -> None:
        """Per-model heads for every saved MLP router, and the never-chosen head for each model
        no training client logged (its head never trained). Only the router before new clients
        joined is judged by the first clients' logs."""
        cfg = self.cfg
        unlogged: dict[str, list[str]] = {}
        for name, router in self.routers.items():
            who = [
                c
                for c in clients.values()
                if name != "before_join" or c < cfg.clients - cfg.new_clients
            ]
            counts = [self.logged[c] for c in who if c in self.logged]
            seen = np.sum(counts, axis=0) if counts else None
            plain = as_plain(router)
            models = list(plain.models)
            missing = [
                m for j, m in enumerate(models)
                if seen is not None and j < len(seen) and seen[j] == 0 and m != cfg.expand_model
            ]  # fmt: skip
            if missing:
                log.info("%s router: no client logged %s; never chosen", name, missing)
                plain = never_chosen(plain, missing)
            unlogged[name] = missing
            self.routers[name] = plain
        self.history["unlogged_models"] = unlogged

    @staticmethod
    def _pool_range(hello: list[Message]) -> tuple[float, float] | None:
        """The pool's cheapest to dearest model by mean logged cost, from the clients' per-model
        sums (what a deployment knows; a simulation's report uses its test pool's range)."""
        try:
            m = [r.content.metric_records["metrics"] for r in hello]
            s = np.sum([nums(x, "model-cost-sum") for x in m], axis=0)
            n = np.sum([nums(x, "model-cost-n") for x in m], axis=0)
        except (KeyError, ValueError):
            return None
        mean = s[n > 0] / n[n > 0]
        mean = mean[mean > 0]
        if len(mean) < 2 or mean.min() >= mean.max():
            return None
        return float(mean.min()), float(mean.max())

    # ---- MLP
    def _mlp_conf(self, router: MLPRouter, **extra: Any) -> ConfigRecord:
        lo_hi = self.cost_range
        rng = {"cost-lo": lo_hi[0], "cost-hi": lo_hi[1]} if lo_hi else {}
        return ConfigRecord(
            {
                "models": list(router.models),
                "mlp-config": json.dumps(asdict(router.cfg)),
                "cost-mu": router.cost_mu,
                "cost-sigma": router.cost_sigma,
                **rng,
                **extra,
            }
        )

    def _fedavg(
        self,
        grid: Grid,
        clients: Mapping[int, int],
        router: MLPRouter,
        rounds: int,
        stage: str,
        **extra: Any,
    ) -> MLPRouter:
        cfg = self.cfg
        strategy = RouterFedAvg(cfg, clients=clients, num_rounds=rounds)
        # every FedAvg stage (training, and the join and expansion rounds after it) keeps its
        # round with the best validation AUC under select-round=validation (round 0: the router
        # the stage started from)
        select = cfg.select_round == "validation"
        best: dict[str, Any] = {}  # the kept round under select-round=validation

        ema: dict[str, np.ndarray] = {}  # the served average under server-ema (training only)

        def served(rnd: int, arrays: ArrayRecord) -> dict[str, np.ndarray]:
            plain = arrays_of(arrays)
            if stage != "train" or not cfg.server_ema or rnd == 0:
                return plain
            d = cfg.server_ema
            for k, v in plain.items():
                floating = np.issubdtype(v.dtype, np.floating)
                ema[k] = d * ema[k] + (1 - d) * v if k in ema and floating else v.copy()
            return dict(ema)  # each update makes new arrays, so a kept round stays as it was

        def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
            now = served(rnd, arrays)
            router.net.load_state_dict({k: torch.as_tensor(v) for k, v in now.items()})
            auc = self._server_auc(router)
            aucs = self._server_val_aucs(router, halves=stage == "train")
            val_auc = None if aucs is None else aucs[0]
            record = {"stage": stage, "round": rnd, "auc": auc, "val_auc": val_auc}
            if aucs is not None and len(aucs) == 3:
                record["val_auc_halves"] = aucs[1:]
            self.history["rounds"].append(record)
            if select and val_auc is not None and val_auc > best.get("val_auc", -np.inf):
                best.update(round=rnd, val_auc=val_auc, arrays=copy.deepcopy(now))
            self._hook(stage, rnd, auc)
            return MetricRecord({"auc": auc}) if auc is not None else None

        conf = self._mlp_conf(router, **extra)
        result = strategy.start(
            grid,
            record_of(net_arrays(router.net)),
            num_rounds=rounds,
            train_config=conf,
            evaluate_config=self._mlp_conf(router, **extra),
            evaluate_fn=evaluate_fn,
        )
        kept = arrays_of(result.arrays)
        if ema:  # the average after the last round, as evaluated
            kept = ema
        if "arrays" in best:
            kept = best["arrays"]
        if stage == "train":
            self.history["selected_round"] = self._selection(best, rounds)
        else:
            self.history.setdefault("stage_selection", {})[stage] = self._selection(best, rounds)
        router.net.load_state_dict({k: torch.as_tensor(v) for k, v in kept.items()})
        self.history.setdefault("aggregation", {})[stage] = strategy.history
        self.history.setdefault("client_auc", {})[stage] = {
            str(k): v for k, v in sorted(strategy.client_auc.items())
        }
        return router

    def _selection(self, best: dict[str, Any], rounds: int) -> dict[str, Any]:
        """What a stage's kept round is and why (``history["selected_round"]`` for training,
        ``history["stage_selection"][stage]`` for the join and expansion stages)."""
        if "arrays" in best:
            return {
                "rule": "validation",
                "round": best["round"],
                "of_rounds": rounds,
                "val_auc": best["val_auc"],
                "validation": "the server's own validation set (the log's validation split, "
                "never client data), on its own pool's cost range",
            }
        why = (
            "select-round=last"
            if self.cfg.select_round == "last"
            else "no server validation set (server-eval off): the last round"
        )
        return {"rule": "last", "round": rounds, "of_rounds": rounds, "why": why}

    def _mlp(
        self, grid: Grid, clients: Mapping[int, int], models: list[str], mu: float, sigma: float
    ) -> MLPRouter:
        cfg = self.cfg
        mcfg = MLPConfig(hidden=cfg.hidden, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed)
        emb, offsets = (
            self._model_embedding(grid, list(clients), models, mu, sigma)
            if cfg.head == "embedding"
            else (None, None)
        )
        net = new_net(
            mcfg, len(models), spec_of(cfg), seed=cfg.seed, model_emb=emb, model_prior=offsets
        )
        router = MLPRouter(net, mcfg, models, mu, sigma)
        return self._fedavg(grid, clients, router, cfg.rounds, "train")

    def _model_embedding(
        self, grid: Grid, nodes: list[int], models: list[str], mu: float, sigma: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The fixed model embeddings of ``head=embedding``: the K-means router's two query
        rounds (local centres -> global centres -> summed per-(cluster, model) cells), then
        :func:`~federation.local.model_embedding` on the sums. Clients reveal what the
        federated K-means router already aggregates, nothing more."""
        centres = self._centres(grid, nodes, models)
        sums, report = self._cells(grid, nodes, models, centres, {})
        self.history.setdefault("aggregation", {})["embedding"] = [report]
        emb, offsets = model_embedding(*sums, cost_mu=mu, cost_sigma=sigma)
        self.history["model_embedding"] = {
            "source": "per-(cluster, model) accuracy of the clients' training rows, "
            f"{len(centres)} federated K-means clusters, overall accuracy, log mean cost",
            "dim": int(emb.shape[1]),
            "rows_per_model": [float(x) for x in sums[2].sum(0)],
        }
        return emb, offsets

    def _expand(
        self, grid: Grid, clients: Mapping[int, int], base: MLPRouter, model: str
    ) -> MLPRouter:
        """Model expansion: append a head for ``model`` and train only that head."""
        net = copy.deepcopy(base.net)
        torch.manual_seed(self.cfg.seed * 1_000_003 + 4099)  # the new head's initialisation
        idx = net.add_head()
        router = MLPRouter(net, base.cfg, [*base.models, model], base.cost_mu, base.cost_sigma)
        return self._fedavg(
            grid,
            clients,
            router,
            self.cfg.expand_rounds,
            "expand",
            **{"only-model": idx, "calibration-frac": self.cfg.calibration_frac},
        )

    # ---- K-means
    def _kmeans(self, grid: Grid, nodes: list[int], models: list[str], expand: str) -> KMeansRouter:
        cfg = self.cfg
        centres = self._centres(grid, nodes, models)
        self._hook("kmeans-pass1", 1, None)
        sums, report = self._cells(grid, nodes, models, centres, {})
        kcfg = KMeansConfig(k=len(centres), seed=cfg.seed)
        router = self._kmeans_prior(kcfg, models, centres, sums)
        kcfg = router.cfg  # the chosen prior serves the expansion's wider table too
        auc = self._server_auc(router)
        self.history["rounds"].append({"stage": "kmeans", "round": 2, "auc": auc})
        self.history["aggregation"] = {"kmeans": [report]}
        self._hook("kmeans-pass2", 2, auc)
        if expand:  # a new model: its column of cell statistics from the calibration rows
            self.routers["base"] = router
            wide = [*models, expand]
            extra = {"only-model": len(models), "calibration-frac": cfg.calibration_frac}
            new, report = self._cells(grid, nodes, wide, centres, extra)
            self.history["aggregation"]["expand"] = [report]
            acc, cost, cnt = (
                np.concatenate([old, n[:, -1:]], axis=1) for old, n in zip(sums, new, strict=True)
            )
            router = kmeans_from_stats(kcfg, wide, centres, acc, cost, cnt)
        return router

    def _kmeans_prior(
        self,
        kcfg: KMeansConfig,
        models: list[str],
        centres: np.ndarray,
        sums: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> KMeansRouter:
        """The cell tables at the run's prior, or at the one of ``PRIORS`` with the best AUC on
        the server's validation set (``history["kmeans_prior"]`` says which and why)."""
        fixed = self.cfg.fixed_prior
        if fixed is None and self.cfg.server_eval:

            def build(p: float) -> KMeansRouter:
                return kmeans_from_stats(replace(kcfg, prior=p), models, centres, *sums)

            router, choice = choose_prior(build, lambda r: self._server_val_auc(r) or 0.0)
            self.history["kmeans_prior"] = {"rule": "validation", **choice}
            return router
        prior = kcfg.prior if fixed is None else fixed
        why = "kmeans-prior" if fixed is not None else "no server validation set (server-eval off)"
        self.history["kmeans_prior"] = {"rule": "fixed", "prior": prior, "why": why}
        return kmeans_from_stats(replace(kcfg, prior=prior), models, centres, *sums)

    def _centres(self, grid: Grid, nodes: list[int], models: list[str]) -> np.ndarray:
        """K-means pass 1: every client's local centres, pooled into ``k-global`` centres."""
        cfg = self.cfg
        conf = ConfigRecord({"models": models})
        pass1 = ask(grid, nodes, "centroids", conf)
        # Pool in client order: reply order varies, and K-means on the pool depends on it.
        pass1.sort(key=lambda r: num(r.content.metric_records["metrics"], "client"))
        cents, counts = [], []
        for r in pass1:
            a = arrays_of(r.content.array_records["arrays"])
            c, n = a.get("centres"), a.get("counts")
            if c is None or n is None or c.ndim != 2 or len(c) != len(n):
                log.warning("rejected pass-1 reply of node %d: malformed", r.metadata.src_node_id)
                continue
            if not (np.all(np.isfinite(c)) and np.all(np.isfinite(n)) and np.all(n >= 0)):
                log.warning("rejected pass-1 reply of node %d: non-finite", r.metadata.src_node_id)
                continue
            cents.append(c)
            counts.append(n)
        if not cents:
            raise RuntimeError("no usable K-means pass-1 replies")
        return global_centres(
            np.concatenate(cents), np.concatenate(counts), cfg.k_global, seed=cfg.seed
        )

    def _cells(
        self,
        grid: Grid,
        nodes: list[int],
        models: list[str],
        centres: np.ndarray,
        extra: dict[str, Any],
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], dict[str, Any]]:
        """Pass 2: every client's per-(cluster, model) sums, checked, clipped and added up."""
        conf = ConfigRecord({"models": models, **extra})
        pass2 = ask(grid, nodes, "cells", conf, arrays=record_of({"centres": centres}))
        shape = (len(centres), len(models))
        stats: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        rejected: dict[str, str] = {}
        for r in pass2:
            client = str(int(num(r.content.metric_records["metrics"], "client")))
            a = arrays_of(r.content.array_records["arrays"])
            parts = [a.get("sum-acc"), a.get("sum-cost"), a.get("counts")]
            if any(p is None or p.shape != shape for p in parts):
                rejected[client] = f"cell tables must have shape {shape}"
            elif not all(np.all(np.isfinite(p)) for p in parts):  # type: ignore[arg-type]
                rejected[client] = "non-finite cell statistics"
            elif np.any(parts[2] < 0):  # type: ignore[operator]
                rejected[client] = "negative counts"
            else:
                stats.append((client, *parts))  # type: ignore[arg-type]
                continue
            log.warning("rejected the cell statistics of client %s: %s", client, rejected[client])
        if not stats:
            raise RuntimeError("no usable K-means pass-2 replies")
        stats.sort(key=lambda s: int(s[0]))  # reply order varies; sums must not
        clipped = self._clip_cells(stats) if self.cfg.robust != "none" else {}
        sums = (
            np.asarray(sum(s[1] for s in stats)),
            np.asarray(sum(s[2] for s in stats)),
            np.asarray(sum(s[3] for s in stats)),
        )
        return sums, {"rejected": rejected, "clipped": clipped}

    def _clip_cells(
        self, stats: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]
    ) -> dict[str, float]:
        """Cap each client's total count at clip-factor x the median, scaling its sums alike."""
        if len(stats) < 2:
            return {}
        totals = np.array([s[3].sum() for s in stats])
        bound = self.cfg.clip_factor * float(np.median(totals))
        out: dict[str, float] = {}
        for i, (client, a, c, n) in enumerate(stats):
            if totals[i] > bound > 0:
                f = bound / totals[i]
                stats[i] = (client, a * f, c * f, n * f)
                out[client] = float(f)
                log.info("clipped the cell statistics of client %s by %.3g", client, f)
        return out

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, router in self.routers.items():
            if isinstance(router, MLPRouter):
                router = as_plain(router)  # per-model heads: an ordinary MLP checkpoint
            router.metrics = {"federated": 1.0}
            router.save(out / ("router.pt" if name == "final" else f"router_{name}.pt"))
        (out / "history.json").write_text(json.dumps(self.history, indent=2, default=str))
        return out / "router.pt"


def make_server_app(
    overrides: Mapping[str, Any] | None = None,
    *,
    on_round: RoundHook | None = None,
    sink: dict[str, Any] | None = None,
) -> ServerApp:
    """A ServerApp whose run config is ``context.run_config`` updated with ``overrides``.

    ``sink`` (in-process simulation only) receives the :class:`FederatedRun`.
    """
    app = ServerApp()
    extra = dict(overrides or {})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        cfg = FederationConfig.from_run_config({**context.run_config, **extra})
        if cfg.lr_list:
            raise ValueError(
                "lrs is simulate-only (one federated run per lr); a ServerApp trains at lr"
            )
        run = FederatedRun(cfg, on_round=on_round)
        run.run(grid)
        if cfg.out_dir:
            path = run.save(cfg.out_dir)
            log.info("saved the federated %s router to %s", cfg.router, path)
        if sink is not None:
            sink["run"] = run

    return app


app = make_server_app()

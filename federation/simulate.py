"""``junction federate simulate``: the paper's experiment in Flower's Simulation Engine.

One run: set the log's validation queries aside (its ``val`` split) and drop its held-out models
(unless ``held-out=include``), partition the rest across clients (``partition.py``), train the
federated router with the real Flower apps in the Simulation Engine (Ray), and compare it on the
global test set, on the validation set and on each client's own test set with the centralised
router (all clients' logged cells pooled, same head layout) and with each client's local router
(its own cells only, routing among the models it has logged). Each client's personalised mixture
of federated and local is evaluated too. Writes ``report.json`` (every figure; identical for the
same command), ``timing.json``, ``summary.md`` and plots.

Every AUC in a report is on one scale: ``common_range_auc`` over the global test pool's
cheapest-to-dearest model cost range (log axis), also for client test sets, the validation set
and the single-model hull (reported beside the routers).

The centralised MLP baseline (``centralized``) has the federated router's head and is chosen
like the federated method, on validation AUC alone: lr from the values the federated lr was
chosen among, epochs by early stopping (:func:`train_central_selected`; the choice and every
candidate's validation curve in ``central_selection``). The earlier matched-compute baseline
(the run's lr, rounds x participation x local epochs epochs, what an average client's data sees
in FedAvg) stays beside it as ``centralized_matched``. The federated side of the same rule, the
round with the best validation AUC, is in ``federated_round_by_validation`` (the saved router is
the last round's). Local MLPs train for the matched epochs. K-means: K = 30 centralised, 8 local,
15 local / 20 global federated (the paper's code).

Usage::

    report = simulate(FederationConfig(logs="routerbench", router="kmeans"), Path("out"))
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from federation.client_app import calibration_seed, calibration_set, spec_of
from federation.config import FederationConfig
from federation.data_source import experiment_partition, experiment_validation
from federation.local import log_cost_moments, pooled_moments, train_mlp
from federation.partition import ClientData, global_test, pooled_train
from federation.routers import (
    UNKNOWN_COST,
    MaskedRouter,
    PersonalisedRouter,
    hull_auc,
    paired_bootstrap,
    router_auc,
    router_curve,
    single_models,
)
from training.data.matrix import EvalMatrix
from training.evaluation.metrics import pool_cost_range, upper_hull
from training.routers.base import Router
from training.routers.kmeans import KMeansConfig, KMeansRouter, choose_prior, kmeans_stats
from training.routers.mlp import MLPConfig, MLPRouter

log = logging.getLogger(__name__)

CENTRAL_K, LOCAL_K = 30, 8
# The lrs the validation-selected centralised MLP tries: those the federated emb head's lr was
# chosen from on validation (federation/grid.py EMB_LR, RESULTS.md notes).
CENTRAL_LRS = (1e-3, 3e-4)


def run_flower_simulation(
    cfg: FederationConfig, out_dir: Path, *, progress: bool = True, verbose: bool = False
) -> Any:
    """Run the ServerApp and ClientApps in Flower's Simulation Engine; returns the FederatedRun."""
    import torch

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
    try:
        simulate_in_process(
            server_app=make_server_app(overrides, on_round=on_round, sink=sink),
            client_app=make_client_app(overrides),
            num_supernodes=cfg.clients,
            verbose=verbose,
        )
    finally:
        bar.close()
    if "run" not in sink:
        raise RuntimeError("the federated run did not finish (see the Flower log above)")
    return sink["run"]


def last_train_val_auc(rounds: list[dict[str, Any]]) -> float:
    """The validation AUC after a federated run's last training round."""
    train = [r for r in rounds if r["stage"] == "train" and r.get("val_auc") is not None]
    if not train:
        raise ValueError("choosing among lrs needs per-round validation figures")
    return float(train[-1]["val_auc"])


def kept_val_auc(history: dict[str, Any]) -> float:
    """The validation AUC of the training round a federated run kept (the last round's under
    ``select-round=last``)."""
    kept = history.get("selected_round", {})
    if kept.get("rule") == "validation":
        return float(kept["val_auc"])
    return last_train_val_auc(history["rounds"])


def crossfit_val_auc(histories: list[list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The kept-round rule's validation figure without the luck of its own choice.

    The rule keeps the (lr, training round) with the best validation AUC of 2 x 31 noisy
    figures, so that AUC is biased upwards, most for the noisiest curves. Cross-fitted: for each
    half of the validation queries, the (lr, round) best on the OTHER half, scored on this one;
    the figure is the mean of the two. ``histories``: each lr's round records (``rounds`` of a
    run, training rounds with ``val_auc_halves``), in the order the rule sees them; ties go to
    the earlier candidate, as in the rule. None when no round has the halves."""
    cands = [
        (i, int(r["round"]), r["val_auc_halves"])
        for i, rounds in enumerate(histories)
        for r in rounds
        if r["stage"] == "train" and r.get("val_auc_halves")
    ]
    if not cands:
        return None
    picks = []
    for h in (0, 1):
        j = max(range(len(cands)), key=lambda c: (cands[c][2][1 - h], -c))
        picks.append(
            {"chosen_on_half": 1 - h, "run": cands[j][0], "round": cands[j][1],
             "val_auc": float(cands[j][2][h])}
        )  # fmt: skip
    return {
        "rule": "each half of the validation queries scores the (lr, round) best on the other "
        "half; the mean of the two",
        "val_auc": float(np.mean([p["val_auc"] for p in picks])),
        "picks": picks,
    }


def federated_runs(
    cfg: FederationConfig, out: Path, *, progress: bool, verbose: bool
) -> tuple[Any, dict[str, Any] | None]:
    """The federated training: at ``lr``, or one per lr of ``lrs`` (MLP) with the one whose kept
    round has the best AUC on the server's validation set kept (ties to the earlier lr), as the
    centralised baseline chooses its lr. The kept run's files are copied to ``out/federated``.
    Returns the kept FederatedRun and the record of the choice (None without ``lrs``)."""
    lrs = cfg.lr_list if cfg.router == "mlp" else []
    if not lrs:
        return run_flower_simulation(
            cfg, out / "federated", progress=progress, verbose=verbose
        ), None
    scores: dict[str, float] = {}
    last: dict[str, float] = {}
    best: tuple[float, float, Any] | None = None
    histories = []
    for lr in lrs:
        run = run_flower_simulation(
            replace(cfg, lr=lr, lrs=""), out / f"federated-lr{lr:g}", progress=progress,
            verbose=verbose,
        )  # fmt: skip
        histories.append(run.history["rounds"])
        scores[f"{lr:g}"] = kept_val_auc(run.history)
        last[f"{lr:g}"] = last_train_val_auc(run.history["rounds"])
        if best is None or scores[f"{lr:g}"] > best[0]:
            best = (scores[f"{lr:g}"], lr, run)
    assert best is not None
    shutil.copytree(out / f"federated-lr{best[1]:g}", out / "federated", dirs_exist_ok=True)
    choice = {
        "rule": "the lr whose kept round has the best validation AUC (ties to the earlier)",
        "lr": best[1],
        "candidates": lrs,
        "val_auc": scores,
        "last_round_val_auc": last,
    }
    crossfit = crossfit_val_auc(histories)
    if crossfit is not None:
        choice["crossfit"] = crossfit
    return best[2], choice


def simulate_in_process(
    *, server_app: Any, client_app: Any, num_supernodes: int, verbose: bool
) -> None:
    """One in-process Flower simulation (Ray, one CPU per client, two in all), Flower's own log
    at WARNING unless ``verbose``. The routers' and the research jobs' runs both go through it."""
    from flwr.simulation import run_simulation

    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    if not verbose:
        flwr_log.setLevel(logging.WARNING)
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_supernodes,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": 2, "num_gpus": 0, "logging_level": "ERROR"},
            },
        )
    finally:
        flwr_log.setLevel(level)


def local_epochs_matched(cfg: FederationConfig) -> int:
    return max(1, round(cfg.rounds * cfg.participation * cfg.local_epochs))


Score = Callable[[Router], float]  # a router's validation figure (the report's AUC)


def kmeans_with_prior(
    cfg: FederationConfig,
    kcfg: KMeansConfig,
    matrix: EvalMatrix,
    wrap: Callable[[KMeansRouter], Router],
    score: Score | None,
) -> tuple[Router, dict[str, Any]]:
    """A K-means router on ``matrix`` (``wrap`` maps it to the router the report scores) at the
    run's prior, or at the one of ``PRIORS`` whose wrapped router scores highest on validation
    (``score``), as the ServerApp chooses the federated router's. Returns it and the choice."""
    centres, stats = kmeans_stats(matrix, kcfg)

    def build(p: float) -> Router:
        return wrap(KMeansRouter.from_stats(replace(kcfg, prior=p), matrix.models, centres, *stats))

    if cfg.fixed_prior is None and score is not None:
        router, choice = choose_prior(build, score)
        return router, {"rule": "validation", **choice}
    prior = kcfg.prior if cfg.fixed_prior is None else cfg.fixed_prior
    return build(prior), {"rule": "fixed", "prior": prior}


def train_local(
    cfg: FederationConfig, data: ClientData, score: Score | None = None
) -> tuple[Router, dict[str, Any] | None]:
    """A client's own router over the models it logged (others: never chosen) and what it chose
    on validation (``score``): the MLP's lr and epochs (:func:`train_mlp_selected`, up to the
    matched ``rounds x participation`` epochs), the K-means prior (:func:`kmeans_with_prior`).
    Without ``score`` the MLP trains the matched epochs at the run's lr (choice None)."""
    known = data.logged_models
    if cfg.router == "mlp":
        seed = cfg.seed + 1 + data.client
        if score is not None:  # lr and epochs (up to the matched ones) chosen on validation
            lrs = central_candidates(cfg)[0]
            router, choice = train_mlp_selected(
                cfg, data.train, score, lrs=lrs, max_epochs=local_epochs_matched(cfg),
                seed=seed, keep=known,
            )  # fmt: skip
            choice.pop("val_auc_per_epoch")
            return router, choice
        mcfg = MLPConfig(
            hidden=cfg.hidden, lr=cfg.baseline_lr, batch_size=cfg.batch_size,
            epochs=local_epochs_matched(cfg), seed=seed,
        )  # fmt: skip
        return MaskedRouter(train_mlp(data.train, mcfg, spec_of(cfg)), known), None
    sub = data.train.select_models([data.train.models[j] for j in known])
    models = list(data.train.models)
    return kmeans_with_prior(
        cfg,
        KMeansConfig(k=LOCAL_K, seed=cfg.seed + data.client),
        sub,
        lambda kr: MaskedRouter(_widen(kr, models, known), known),
        score,
    )


def personal_calibration(cfg: FederationConfig, data: ClientData) -> tuple[EvalMatrix, EvalMatrix]:
    """A client's fixed personalisation calibration set (a quarter of its training queries,
    drawn once from the run seed and the client) and the rest."""
    rng = np.random.default_rng(cfg.seed + 7 * data.client + 1)
    order = rng.permutation(data.train.num_queries)
    n_cal = max(1, data.train.num_queries // 4)
    return data.train.subset(np.sort(order[:n_cal])), data.train.subset(np.sort(order[n_cal:]))


def personalise(
    cfg: FederationConfig, fed: Router, data: ClientData, local: Router, score: Score | None = None
) -> Router:
    """The per-model inverse-error mixture; errors on the client's calibration quarter, the local
    side measured by a local router refitted without it (chosen as the local router is)."""
    cal, rest = personal_calibration(cfg, data)
    local_cal = (
        train_local(cfg, replace(data, train=rest), score)[0] if rest.observed.any() else local
    )
    return PersonalisedRouter.fit(_as_full(fed, data.train), local, cal, local_for_errors=local_cal)


def central_candidates(cfg: FederationConfig) -> tuple[tuple[float, ...], int]:
    """The learning rates and the most epochs the validation-selected centralised MLP tries:
    the lrs the federated lr was chosen from (``CENTRAL_LRS``, plus the run's own AdamW lr) and
    up to one epoch per federated round (``rounds x local-epochs``, at least the matched
    epochs)."""
    lrs = tuple(sorted({*CENTRAL_LRS, cfg.baseline_lr}, reverse=True))
    return lrs, max(cfg.rounds * cfg.local_epochs, local_epochs_matched(cfg))


def train_mlp_selected(
    cfg: FederationConfig,
    data: EvalMatrix,
    score: Score,
    *,
    lrs: tuple[float, ...],
    max_epochs: int,
    seed: int,
    keep: list[int] | None = None,
    cost_moments: tuple[float, float] | None = None,
) -> tuple[Router, dict[str, Any]]:
    """An MLP chosen on validation alone: each lr trains for ``max_epochs``, ``score`` (the
    validation AUC) is measured after every epoch, and the (lr, epochs) with the highest one is
    kept (early stopping; ties go to fewer epochs, then the earlier lr). ``keep``: the model
    columns it may route to (others: never chosen). Returns the router and the record of the
    choice (every candidate's validation curve)."""
    curves: dict[str, list[float]] = {}
    best: tuple[float, float, int, dict[str, Any]] | None = None  # (auc, lr, epochs, state)

    def masked(r: Router) -> Router:
        return r if keep is None else MaskedRouter(r, keep)

    proto: MLPRouter | None = None
    for lr in lrs:
        mcfg = MLPConfig(
            hidden=cfg.hidden, lr=lr, batch_size=cfg.batch_size, epochs=max_epochs, seed=seed
        )
        curve: list[float] = []

        def after(router: MLPRouter, done: int, lr: float = lr, curve: list[float] = curve) -> None:
            nonlocal best
            auc = score(masked(router))
            curve.append(auc)
            if best is None or auc > best[0]:
                best = (auc, lr, done, copy.deepcopy(router.net.state_dict()))

        proto = train_mlp(data, mcfg, spec_of(cfg), cost_moments=cost_moments, after_epoch=after)
        curves[f"{lr:g}"] = curve
    assert best is not None and proto is not None
    auc, lr, epochs, state = best
    proto.net.load_state_dict(state)
    proto.cfg = replace(proto.cfg, lr=lr, epochs=epochs)
    record = {
        "rule": "lr and epochs chosen on validation AUC (the validation pool's cost range), "
        "early stopping",
        "lr": lr,
        "epochs": epochs,
        "val_auc": auc,
        "candidate_lrs": list(lrs),
        "max_epochs": max_epochs,
        "val_auc_per_epoch": curves,
    }
    return masked(proto), record


def train_central_selected(
    cfg: FederationConfig,
    pooled: EvalMatrix,
    score: Score,
    keep: list[int] | None = None,
) -> tuple[Router, dict[str, Any]]:
    """The centralised MLP chosen on validation AUC alone (:func:`train_mlp_selected` over
    :func:`central_candidates`), like the federated router's lr and round."""
    lrs, max_epochs = central_candidates(cfg)
    moments = pooled_moments([log_cost_moments(pooled)])
    return train_mlp_selected(
        cfg, pooled, score, lrs=lrs, max_epochs=max_epochs, seed=cfg.seed, keep=keep,
        cost_moments=moments,
    )  # fmt: skip


def train_central(
    cfg: FederationConfig, pooled: EvalMatrix, score: Score | None = None
) -> tuple[Router, dict[str, Any] | None]:
    """The centralised router at matched compute (MLP: the run's lr, rounds x participation x
    local epochs epochs); the report's MLP baseline is :func:`train_central_selected`, this one
    stays beside it as ``centralized_matched``. K-means: its prior chosen on validation
    (``score``) as the federated one is; returns the router and that choice (None: MLP)."""
    if cfg.router == "mlp":
        mcfg = MLPConfig(
            hidden=cfg.hidden, lr=cfg.baseline_lr, batch_size=cfg.batch_size,
            epochs=local_epochs_matched(cfg), seed=cfg.seed,
        )  # fmt: skip
        moments = pooled_moments([log_cost_moments(pooled)])
        return train_mlp(pooled, mcfg, spec_of(cfg), cost_moments=moments), None
    kcfg = KMeansConfig(k=CENTRAL_K, seed=cfg.seed)
    known = [j for j in range(len(pooled.models)) if pooled.observed[:, j].any()]
    if len(known) == len(pooled.models):
        return kmeans_with_prior(cfg, kcfg, pooled, lambda kr: kr, score)
    # a model nobody logged (strong model skew): never chosen, as the federated router does
    models = list(pooled.models)
    return kmeans_with_prior(
        cfg,
        kcfg,
        pooled.select_models([pooled.models[j] for j in known]),
        lambda kr: _widen(kr, models, known),
        score,
    )


def _widen(kr: KMeansRouter, models: list[str], known: list[int]) -> KMeansRouter:
    """A K-means router over ``known`` columns as one over all ``models`` (the others: never
    chosen, accuracy 0 at a prohibitive cost)."""
    m = len(models)
    acc = np.zeros((len(kr.centres), m), dtype=np.float32)
    cost = np.full((len(kr.centres), m), UNKNOWN_COST, dtype=np.float32)
    counts = np.zeros((len(kr.centres), m), dtype=np.float32)
    acc[:, known], cost[:, known], counts[:, known] = kr.acc, kr.cost, kr.counts
    return KMeansRouter(kr.cfg, models, kr.centres, acc, cost, counts)


def _test_for(router: Router, test: EvalMatrix) -> EvalMatrix:
    return test if list(router.models) == list(test.models) else test.select_models(router.models)


def simulate(
    cfg: FederationConfig, out: Path, *, progress: bool = True, verbose: bool = False
) -> dict[str, Any]:
    """The whole experiment; writes ``out/report.json``, ``out/summary.md`` and plots. The
    numerical libraries' thread pools are held at one thread, so the figures computed in this
    process (centralised, local and personalised routers, K-means, embeddings) do not depend on
    the machine's core count or ``OMP_NUM_THREADS``; the Ray workers run one thread each."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _simulate(cfg, out, progress=progress, verbose=verbose)


def _simulate(cfg: FederationConfig, out: Path, *, progress: bool, verbose: bool) -> dict[str, Any]:
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    parts = experiment_partition(cfg)
    test = global_test(parts)
    val = experiment_validation(cfg)
    span = pool_cost_range(test.cost_usd)  # the report's one cost range for test figures
    # validation figures (and every choice made on them) integrate over the validation pool's
    # own range: no test statistic, not even the models' mean test cost, enters a choice
    val_span = pool_cost_range(val.cost_usd)
    if cfg.expand_model:  # the new model's labels enter only through the expansion step
        parts = [
            replace(
                p,
                train=p.train.select_models([m for m in p.train.models if m != cfg.expand_model]),
            )
            for p in parts
        ]
    log.info("partitioned the logs over %d clients", cfg.clients)
    run, lr_choice = federated_runs(cfg, out, progress=progress, verbose=verbose)
    fed: Router = run.routers["final"]
    step = tqdm(total=2 + cfg.clients, desc="baselines", disable=not progress, file=sys.stderr)
    pooled = pooled_train(parts)

    def on_val(router: Router) -> float:  # the validation figure every choice is made on
        return router_auc(router, _test_for(router, val), val_span)

    central, central_prior = train_central(cfg, pooled, on_val)
    unlogged = [m for j, m in enumerate(pooled.models) if not pooled.observed[:, j].any()]
    logged = [j for j, m in enumerate(pooled.models) if m not in unlogged]
    if unlogged and cfg.router == "mlp":  # no client logged them: their heads never trained
        log.info("models nobody logged, never chosen: %s", unlogged)
        fed = MaskedRouter(fed, [j for j, m in enumerate(fed.models) if m not in unlogged])
        central = MaskedRouter(central, logged)
    central_matched: Router | None = None
    selection: dict[str, Any] | None = None
    if cfg.router == "mlp":  # the like-for-like baseline: chosen on validation, same head
        central_matched = central
        central, selection = train_central_selected(
            cfg, pooled, on_val, logged if unlogged else None
        )
    step.update(1)
    local: list[Router] = []
    local_prior: list[dict[str, Any] | None] = []
    for p in parts:
        router, choice = train_local(cfg, p, on_val)
        local.append(router)
        local_prior.append(choice)
        step.update(1)
    personal = [personalise(cfg, fed, p, loc, on_val) for p, loc in zip(parts, local, strict=True)]
    step.update(1)
    step.close()

    def auc_of(router: Router, data: EvalMatrix) -> float:
        return router_auc(router, _test_for(router, data), span)

    def aucs_on(data: EvalMatrix, rng: tuple[float, float]) -> dict[str, Any]:
        return {
            "federated": router_auc(fed, _test_for(fed, data), rng),
            "centralized": router_auc(central, _test_for(central, data), rng),
            "local": [router_auc(r, _test_for(r, data), rng) for r in local],
            "hull": hull_auc(data, rng),
        }

    auc, val_auc = aucs_on(test, span), aucs_on(val, val_span)
    if central_matched is not None:
        auc["centralized_matched"] = auc_of(central_matched, test)
        val_auc["centralized_matched"] = on_val(central_matched)
    client_auc: dict[str, list[float]] = {
        "federated": [], "centralized": [], "local": [], "personalized": [], "hull": [],
    }  # fmt: skip
    for p, loc, per in zip(parts, local, personal, strict=True):
        client_auc["federated"].append(auc_of(fed, p.test))
        client_auc["centralized"].append(auc_of(central, p.test))
        client_auc["local"].append(auc_of(loc, p.test))
        client_auc["personalized"].append(auc_of(per, p.test))
        client_auc["hull"].append(hull_auc(p.test, span))
    pairs = zip(client_auc["federated"], client_auc["local"], strict=True)
    worse = [min(f, loc) for f, loc in pairs]
    shortfall = {
        str(i): round(w - per, 6)
        for i, (per, w) in enumerate(zip(client_auc["personalized"], worse, strict=True))
        if per < w - 1e-12
    }
    best_local = max(auc["local"])
    best_idx = int(np.argmax(auc["local"]))

    def gap(a: Router, b: Router) -> dict[str, float]:
        # on the model columns both routers know (an expansion run's baselines never saw the
        # new model)
        data = test.select_models([m for m in test.models if m in a.models and m in b.models])
        return paired_bootstrap(_as_full(a, data), _as_full(b, data), data, span, seed=cfg.seed)

    report: dict[str, Any] = {
        "config": asdict(cfg),
        "auc_definition": (
            "common_range_auc: mean running-best accuracy over the global test pool's "
            "cheapest-to-dearest model mean cost (log axis, 512 points), 0 below a router's "
            "cheapest point; the same range for every router and client test set; validation "
            "figures, and every choice made on them, use the validation pool's own range"
        ),
        "cost_range": list(span),
        "validation_cost_range": list(val_span),
        "data": {
            "logs": cfg.logs,
            "models": list(test.models),
            "held_out": cfg.held_out,
            "queries_test": test.num_queries,
            "queries_validation": val.num_queries,
            "clients": [
                {
                    "client": p.client,
                    "train_queries": p.train.num_queries,
                    "train_rows": int(p.train.observed.sum()),
                    "test_queries": p.test.num_queries,
                    "logged_models": len(p.logged_models),
                    "personalisation_calibration_queries": personal_calibration(cfg, p)[
                        0
                    ].num_queries,
                }
                for p in parts
            ],
        },
        "auc": auc,
        "val_auc": val_auc,
        "client_auc": client_auc,
        "checks": {
            "federated_minus_centralized": auc["federated"] - auc["centralized"],
            "federated_within_001_of_centralized": bool(
                abs(auc["federated"] - auc["centralized"]) <= 0.01
            ),
            "federated_minus_best_local": auc["federated"] - best_local,
            "federated_above_every_local": bool(auc["federated"] > best_local),
            "clients_federated_beats_local": int(
                sum(
                    f > x for f, x in zip(client_auc["federated"], client_auc["local"], strict=True)
                )
            ),
            "personalized_at_least_worse_of_two": len(parts) - len(shortfall),
            "personalized_shortfall": shortfall,
        },
        "bootstrap": {
            "what": "paired bootstrap over the global test queries (200 resamples, run seed): "
            "federated minus centralised, and minus the best local router (the one with the "
            "highest test AUC, kept fixed)",
            "federated_minus_centralized": gap(fed, central),
            "federated_minus_best_local": gap(fed, local[best_idx]),
        },
        "rounds": run.history.get("rounds", []),
        "aggregation": run.history.get("aggregation", {}),
    }
    if selection is not None:
        report["central_selection"] = selection
    by_val = round_by_validation(report["rounds"])
    if by_val is not None:
        report["federated_round_by_validation"] = by_val
    if lr_choice is not None:
        report["federated_lr"] = lr_choice
    else:
        crossfit = crossfit_val_auc([report["rounds"]])
        if crossfit is not None:  # one lr: its rounds alone
            report["federated_crossfit"] = crossfit
    if cfg.router == "mlp" and any(local_prior):  # each local MLP's lr and epochs
        report["local_selection"] = local_prior
    if cfg.router == "kmeans":  # every K-means router's shrinkage prior and how it was chosen
        report["kmeans_prior"] = {
            "federated": run.history.get("kmeans_prior"),
            "centralized": central_prior,
            "local": local_prior,
        }
    if "selected_round" in run.history:  # which training round the federated router is
        report["federated_selection"] = run.history["selected_round"]
    if "stage_selection" in run.history:  # the kept round of the join and expansion stages
        report["stage_selection"] = run.history["stage_selection"]
    if "model_embedding" in run.history:  # head=embedding: what the fixed embeddings hold
        report["model_embedding"] = run.history["model_embedding"]
    if cfg.expand_model:
        base = run.routers["base"]
        new_idx = list(fed.models).index(cfg.expand_model)
        report["expansion"] = {
            "model": cfg.expand_model,
            "before": auc_of(base, test),
            "after": auc["federated"],
            "calibration_frac": cfg.calibration_frac,
            "calibration_rows": [
                int(
                    calibration_set(
                        _aligned_full(p, fed.models),
                        new_idx,
                        cfg.calibration_frac,
                        calibration_seed(cfg.seed, p.client),
                    )
                    .observed[:, new_idx]
                    .sum()
                )  # fmt: skip
                for p in parts
            ],
        }
    if cfg.new_clients and "before_join" in run.routers:
        before = run.routers["before_join"]
        after = run.routers.get("base", fed)  # with an expansion too: the router before it
        new = parts[cfg.clients - cfg.new_clients :]
        report["new_clients"] = {
            "clients": [p.client for p in new],
            "before": auc_of(before, test),
            "after": auc_of(after, test),
            "before_on_new_clients": [auc_of(before, p.test) for p in new],
            "after_on_new_clients": [auc_of(after, p.test) for p in new],
            "personalisation_calibration_queries": [
                personal_calibration(cfg, p)[0].num_queries for p in new
            ],
        }
    curves = {
        "federated": router_curve(fed, _test_for(fed, test)),
        "centralized": router_curve(central, _test_for(central, test)),
    }
    best = int(np.argmax(auc["local"]))
    worst = int(np.argmin(auc["local"]))
    curves[f"local (best, client {best})"] = router_curve(local[best], _test_for(local[best], test))
    curves[f"local (worst, client {worst})"] = router_curve(
        local[worst], _test_for(local[worst], test)
    )
    report["curves"] = {k: {"cost": c.tolist(), "acc": a.tolist()} for k, (c, a) in curves.items()}
    singles = single_models(test)
    hc, ha = upper_hull(
        np.array([c for c, _ in singles.values()]), np.array([a for _, a in singles.values()])
    )
    report["single_models"] = {m: {"cost": c, "acc": a} for m, (c, a) in singles.items()}
    report["hull"] = {"cost": hc.tolist(), "acc": ha.tolist()}
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    (out / "timing.json").write_text(json.dumps({"seconds": round(time.time() - t0, 1)}) + "\n")
    from federation.report import write_plots, write_summary

    write_plots(report, out)
    write_summary(report, out / "summary.md")
    return report


def round_by_validation(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The federated training round validation chooses (highest validation AUC, ties to the
    earlier round) and that round's test AUC, from the per-round figures the ServerApp
    records: the federated side of early stopping on validation, the rule the centralised
    baseline's early stopping uses. Under ``select-round=validation`` (the default) it is the
    round the ServerApp keeps (``federated_selection`` in the report); under ``last`` it says
    what the rule would have given. None without per-round validation figures (K-means,
    server-eval off)."""
    train = [r for r in rounds if r["stage"] == "train" and r.get("val_auc") is not None]
    if not train:
        return None
    best = max(train, key=lambda r: (r["val_auc"], -r["round"]))
    return {
        "round": best["round"],
        "of_rounds": max(r["round"] for r in train),
        "val_auc": best["val_auc"],
        "test_auc": best["auc"],
    }


def _aligned_full(p: ClientData, models: list[str]) -> ClientData:
    """A client's data with its full-label training matrix over ``models`` (for counting the
    expansion's calibration rows exactly as the ClientApp draws them)."""
    full = p.train_full
    return replace(p, train_full=full.select_models(list(models)) if full is not None else None)


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

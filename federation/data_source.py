"""Where a client's evaluation logs come from. They never leave the client.

A SuperNode's ``node_config`` picks the source:

- ``data-path=FILE``: private mode, a local evaluation log (JSONL, CSV or Parquet; the
  row contract of ``training/data/schema.py``) that only this client reads;
- ``gateway-db=URL client=NAME``: the rows of the gateway's database posted with the API key
  named ``NAME`` (``POST /v1/evaluations``), embeddings included (``gateway_db.py``);
- ``partition-id=I`` (what the Simulation Engine sets): part I of the paper's partition of the
  run config's ``logs`` (``partition.py``), for experiments.

A client's own log is split 75/25 into train and test with the run's seed; its columns are
aligned to the federation's candidate models (the ``models`` the server sends with every
message), rows of other models are dropped with a log line.

Usage::

    data = client_data(cfg, context.node_config, models)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np

from federation.config import FederationConfig
from federation.partition import ClientData, partition
from training.data.matrix import EvalMatrix

log = logging.getLogger(__name__)


def align_models(m: EvalMatrix, models: list[str]) -> EvalMatrix:
    """Columns in the federation's model order; a model the log lacks is an all-NaN column."""
    extra = sorted(set(m.models) - set(models))
    if extra:
        log.info("ignoring %d model(s) outside the federation: %s", len(extra), extra)
    shape = (m.num_queries, len(models))

    def col(a: np.ndarray) -> np.ndarray:
        out = np.full(shape, np.nan, dtype=np.float32)
        for j, name in enumerate(models):
            if name in m.models:
                out[:, j] = a[:, m.models.index(name)]
        return out

    return replace(
        m,
        models=list(models),
        scores=col(m.scores),
        cost_usd=col(m.cost_usd),
        prompt_tokens=col(m.prompt_tokens),
        completion_tokens=col(m.completion_tokens),
    )


def split_own_log(m: EvalMatrix, *, client: int, test_frac: float, seed: int) -> ClientData:
    """A client's own log as train/test (75/25 by default); every logged cell stays."""
    if m.num_queries < 2:
        raise ValueError(f"client {client}: a log needs at least 2 queries, it has {m.num_queries}")
    order = np.random.default_rng(seed).permutation(m.num_queries)
    n_test = max(1, round(m.num_queries * test_frac))
    test, train = m.subset(np.sort(order[:n_test])), m.subset(np.sort(order[n_test:]))
    counts = train.observed.sum(0).astype(np.float64)
    policy = counts / counts.sum() if counts.sum() > 0 else counts
    return ClientData(client=client, train=train, test=test, policy=policy)


@lru_cache(maxsize=4)
def _matrix(logs: str, held_out: str, expand_model: str) -> EvalMatrix:
    """The log over the federation's models: the held-out (``unseen_models``) ones dropped
    unless ``held_out == "include"``; ``expand_model`` stays (a run that onboards it says so)."""
    from training.data.load import load_matrix

    m = load_matrix(logs)
    unseen = set(m.meta_models("unseen_models"))
    if held_out == "include" or not unseen:
        return m
    return m.select_models([x for x in m.models if x not in unseen or x == expand_model])


def split_validation(m: EvalMatrix) -> tuple[EvalMatrix, EvalMatrix]:
    """(rows for the clients, validation rows with full labels): the log's own ``val`` split,
    else a fixed 10% of its queries (seed 0). Methods are chosen on validation, never on test."""
    val = m.split == "val"
    if not val.any():
        order = np.random.default_rng(0).permutation(m.num_queries)
        val = np.zeros(m.num_queries, dtype=bool)
        val[order[: max(1, m.num_queries // 10)]] = True
    return m.subset(~val), m.subset(val)


@lru_cache(maxsize=4)
def _partition(
    logs: str,
    held_out: str,
    expand_model: str,
    clients: int,
    alpha: float,
    model_alpha: float,
    test_frac: float,
    seed: int,
) -> list[ClientData]:
    # Cached per process: a Simulation Engine worker serves many virtual clients of one run.
    rest, _ = split_validation(_matrix(logs, held_out, expand_model))
    return partition(
        rest,
        clients=clients,
        alpha=alpha,
        model_alpha=model_alpha,
        test_frac=test_frac,
        seed=seed,
    )


def experiment_partition(cfg: FederationConfig) -> list[ClientData]:
    """The paper's partition of ``logs`` (validation rows and held-out models removed first)."""
    return _partition(
        cfg.logs, cfg.held_out, cfg.expand_model, cfg.clients, cfg.alpha, cfg.model_alpha,
        cfg.test_frac, cfg.seed,
    )  # fmt: skip


def experiment_validation(cfg: FederationConfig) -> EvalMatrix:
    """The validation queries of ``logs`` with full labels (for choosing methods)."""
    return split_validation(_matrix(cfg.logs, cfg.held_out, cfg.expand_model))[1]


def federation_models(cfg: FederationConfig) -> list[str]:
    """The candidate models: the run config's ``models``, else those of ``logs`` (held-out
    models left out unless ``held-out=include``)."""
    if cfg.model_list:
        return cfg.model_list
    return list(_matrix(cfg.logs, cfg.held_out, cfg.expand_model).models)


def _aligned(data: ClientData, models: list[str]) -> ClientData:
    if models == data.train.models:
        return data
    full = data.train_full
    return replace(
        data,
        train=align_models(data.train, models),
        test=align_models(data.test, models),
        train_full=align_models(full, models) if full is not None else None,
    )


@lru_cache(maxsize=8)
def _own_log(path: str, client: int, test_frac: float, seed: int) -> ClientData:
    from training.data.load import load_matrix

    return split_own_log(load_matrix(path), client=client, test_frac=test_frac, seed=seed)


def client_data(
    cfg: FederationConfig, node_config: Mapping[str, Any], models: list[str]
) -> ClientData:
    """This client's train/test logs, aligned to the federation's ``models``."""
    client = int(node_config.get("partition-id", 0))
    if "data-path" in node_config:
        data = _own_log(str(node_config["data-path"]), client, cfg.test_frac, cfg.seed)
    elif "gateway-db" in node_config:
        from federation.gateway_db import read_client_matrix

        m = read_client_matrix(str(node_config["gateway-db"]), str(node_config["client"]))
        data = split_own_log(m, client=client, test_frac=cfg.test_frac, seed=cfg.seed)
    elif "partition-id" in node_config:
        parts = experiment_partition(cfg)
        if not 0 <= client < len(parts):
            raise ValueError(f"partition-id {client} outside 0..{len(parts) - 1}")
        data = parts[client]
    else:
        raise ValueError(
            "node config names no data: set data-path=FILE, gateway-db=URL with client=NAME, "
            "or partition-id=I"
        )
    data = _aligned(data, models)
    if data.train.observed.sum() == 0:
        raise ValueError(f"client {data.client}: no logged evaluations of the federation's models")
    return data

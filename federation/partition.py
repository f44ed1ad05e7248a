"""The paper's client partition of an evaluation matrix (Askin et al., arXiv 2601.22318,
"Data and metrics").

1. Queries are split across clients by task (MMLU-Pro category, RouterBench task name, or a
   log's ``category``): each client's task mixture ~ Dirichlet(alpha) (paper: 0.6; 0.03 for
   extreme heterogeneity), see :func:`split_by_task`.
2. Each client splits its queries 75/25 into train and test.
3. Each client has a logging policy over models ~ Dirichlet(model_alpha) (paper: 0.45); every
   training query keeps the score and cost of one model drawn from that policy (among the models
   evaluated on the query), all other cells become NaN. Test queries keep every label.
4. The global test set is the union of the client test splits.

Every client can compute its own part from the same (data, seed) without seeing the others'
(in simulation), or bring its own log (private mode): this module is only the experiment protocol.

Usage::

    parts = partition(load_matrix("routerbench"), clients=10, alpha=0.6, seed=0)
    parts[3].train.scores      # one observed model per row
    global_test(parts)         # union of test splits, full labels
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from training.data.matrix import EvalMatrix
from training.data.schema import EvalRow


@dataclass(frozen=True)
class ClientData:
    """One client's evaluation logs: ``train`` (logged cells only) and ``test`` (full labels)."""

    client: int
    train: EvalMatrix
    test: EvalMatrix
    policy: npt.NDArray[np.float64]  # [M] its logging distribution over models
    # The training queries with every label: only for experiments that reveal extra labels
    # (model expansion's calibration set); None for a client's own log.
    train_full: EvalMatrix | None = None

    @property
    def logged_models(self) -> list[int]:
        """Indices of the models this client has at least one training row for."""
        return [int(j) for j in np.flatnonzero(self.train.observed.any(axis=0))]


def split_by_task(
    tasks: npt.NDArray[np.str_],
    clients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_size: int = 10,
    max_tries: int = 100,
) -> list[npt.NDArray[np.int64]]:
    """Query indices per client, skewed by task.

    Each client draws a task mixture q_i ~ Dirichlet(alpha) over the task labels; a query of task
    t goes to client i with probability q_i[t] / sum_j q_j[t]. Small alpha gives each client one
    or two tasks (alpha = 0.03 is the paper's extreme case) while every client still gets data,
    which a per-task split over clients cannot promise with fewer tasks than clients. Draws are
    repeated until every client holds at least ``min_size`` queries (the last draw is kept if
    none qualifies).
    """
    labels, inv = np.unique(tasks, return_inverse=True)
    owner = np.zeros(len(tasks), dtype=np.int64)
    for _ in range(max_tries):
        q = rng.dirichlet(np.full(len(labels), alpha), size=clients)  # [clients, T]
        q = np.maximum(q, 1e-300)
        share = q / q.sum(axis=0, keepdims=True)  # [clients, T]: P(client | task)
        cum = np.cumsum(share[:, inv], axis=0)  # [clients, Q]
        u = rng.random(len(tasks))
        owner = np.minimum((u[None, :] > cum).sum(axis=0), clients - 1)
        if np.bincount(owner, minlength=clients).min() >= min_size:
            break
    return [np.flatnonzero(owner == c).astype(np.int64) for c in range(clients)]


def log_one_model(
    m: EvalMatrix, policy: npt.NDArray[np.float64], rng: np.random.Generator
) -> EvalMatrix:
    """Keep one evaluated model per query, drawn from ``policy`` restricted to observed cells."""
    obs = m.observed
    keep = np.zeros_like(obs)
    for i in range(m.num_queries):
        w = np.where(obs[i], policy, 0.0)
        if w.sum() <= 0:  # the policy puts no mass on this query's models: uniform over them
            w = obs[i].astype(np.float64)
        if w.sum() <= 0:
            continue
        keep[i, rng.choice(len(w), p=w / w.sum())] = True
    nan = np.float32(np.nan)
    return replace(
        m,
        scores=np.where(keep, m.scores, nan),
        cost_usd=np.where(keep, m.cost_usd, nan),
        prompt_tokens=np.where(keep, m.prompt_tokens, nan),
        completion_tokens=np.where(keep, m.completion_tokens, nan),
    )


def partition(
    matrix: EvalMatrix,
    *,
    clients: int,
    alpha: float = 0.6,
    model_alpha: float = 0.45,
    test_frac: float = 0.25,
    seed: int = 0,
) -> list[ClientData]:
    """The paper's partition; deterministic in ``seed``."""
    if matrix.num_queries < clients * 8:
        raise ValueError(
            f"{matrix.num_queries} queries are too few for {clients} clients (need >= 8 each)"
        )
    rng = np.random.default_rng(seed)
    tasks = matrix.categories if len(np.unique(matrix.categories)) > 1 else None
    if tasks is None:  # a log without task labels: random shares instead of task skew
        tasks = np.array([str(i % clients) for i in range(matrix.num_queries)])
    idx = split_by_task(tasks, clients, alpha, rng, min_size=max(8, matrix.num_queries // 200))
    out: list[ClientData] = []
    for c, rows in enumerate(idx):
        rows = rows[rng.permutation(len(rows))]
        n_test = max(1, round(len(rows) * test_frac))
        test_rows, train_rows = np.sort(rows[:n_test]), np.sort(rows[n_test:])
        policy = rng.dirichlet(np.full(len(matrix.models), model_alpha))
        train_full = replace(matrix.subset(train_rows), split=np.full(len(train_rows), "train"))
        train = log_one_model(train_full, policy, rng)
        test = matrix.subset(test_rows)
        test = replace(test, split=np.full(len(test_rows), "test"))
        out.append(
            ClientData(client=c, train=train, test=test, policy=policy, train_full=train_full)
        )
    return out


def concat(parts: list[EvalMatrix], dataset: str) -> EvalMatrix:
    """Row-wise union of matrices over the same models."""
    first = parts[0]
    return replace(
        first,
        dataset=dataset,
        query_ids=np.concatenate([p.query_ids for p in parts]),
        queries=[q for p in parts for q in p.queries],
        categories=np.concatenate([p.categories for p in parts]),
        split=np.concatenate([p.split for p in parts]),
        embeddings=np.concatenate([p.embeddings for p in parts]),
        scores=np.concatenate([p.scores for p in parts]),
        cost_usd=np.concatenate([p.cost_usd for p in parts]),
        prompt_tokens=np.concatenate([p.prompt_tokens for p in parts]),
        completion_tokens=np.concatenate([p.completion_tokens for p in parts]),
    )


def global_test(parts: list[ClientData]) -> EvalMatrix:
    """The union of the client test splits, with full labels."""
    return concat([p.test for p in parts], "global-test")


def pooled_train(parts: list[ClientData]) -> EvalMatrix:
    """What a centralised router would see: every client's logged training cells."""
    return concat([p.train for p in parts], "pooled-train")


def to_rows(m: EvalMatrix, *, client_id: str | None = None) -> list[EvalRow]:
    """The observed cells of a matrix as evaluation-log rows (embeddings included), e.g. to give
    each client of an experiment its own log file."""
    q, j = np.nonzero(m.observed)
    return [
        EvalRow(
            query_id=str(m.query_ids[i]),
            model=m.models[k],
            score=float(m.scores[i, k]),
            prompt_tokens=int(np.nan_to_num(m.prompt_tokens[i, k])),
            completion_tokens=int(np.nan_to_num(m.completion_tokens[i, k])),
            query=m.queries[i] or None,
            embedding=tuple(float(x) for x in m.embeddings[i]),
            cost_usd=float(m.cost_usd[i, k]),
            category=str(m.categories[i]) or None,
            client_id=client_id,
        )
        for i, k in zip(q.tolist(), j.tolist(), strict=True)
    ]

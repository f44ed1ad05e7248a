"""What the dashboard shows, assembled from what the gateway already keeps.

- the pool: LOCUS embeddings on a 2-D map (``training.evaluation.harness.map_2d``, PCA), with
  prices, health and nearest models (``training.selection.neighbours``);
- traffic over time from ``request_records``: routing share, predicted p_correct and realised
  quality (``service.dashboard.outcomes``) per model;
- savings: cost per 1,000 routed requests against sending the same requests to the best single
  model, overall and per API key (:func:`savings`);
- the accuracy-cost frontier of a router on held-out data-set questions with known outcomes;
- federated rounds from federation reports; turn budgets per conversation; backend health.

"Best single model" is the candidate with the highest mean predicted p_correct over the same
routed requests: the one model an operator would pick to answer all of them. Its cost for a
request is its prices on the request's real prompt and completion tokens, so the comparison is
of prices for the same work (a different model would answer at a different length; the gateway
cannot know that length without sending the request).

Usage::

    data = DashboardData()
    body = await data.overview(c, window(24))
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from sqlalchemy import select

from service.dashboard.outcomes import OutcomeIndex, Outcomes
from service.db.models import ApiKeyRow, RequestRecordRow
from service.request_log import text_sha256 as _sha
from service.routing.registry import Pool, PoolEntry

if TYPE_CHECKING:
    from service.admin.routers_service import RouterRegistry
    from service.db.engine import Database
    from service.metrics import Metrics
    from service.request_log import RequestLog
    from service.routing.engine import RoutingEngine
    from service.settings import Settings
    from service.upstream.health import BackendHealth


class GatewayView(Protocol):
    """The collaborators the dashboard's figures read (``service.app.Components`` has them)."""

    settings: Settings
    db: Database
    engine: RoutingEngine
    health: BackendHealth
    metrics: Metrics
    requests_log: RequestLog
    routers: RouterRegistry


# The figures cover the newest MAX_RECORDS requests of the window; "capped" says when there
# were more (the page reads them twice per refresh, so this bounds its cost to the gateway).
MAX_RECORDS = 20_000
NEIGHBOURS = 3
FRONTIER_QUESTIONS = 400
FRONTIER_MIN_QUESTIONS = 100
FRONTIER_SEED = 0
MAX_BUCKETS = 24


def _iso(t: datetime) -> str:
    if t.tzinfo is None:  # SQLite gives naive datetimes back (stored as UTC)
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _mean(xs: list[float]) -> float | None:
    return float(sum(xs) / len(xs)) if xs else None


@dataclass(frozen=True)
class Window:
    hours: float
    since: datetime


def window(hours: float) -> Window:
    return Window(hours, datetime.now(UTC) - timedelta(hours=hours))


def pool_datasets(pool: Pool) -> list[str]:
    return sorted({e.backend.dataset for e in pool.entries if e.backend.dataset})


def best_cost(entry: PoolEntry, r: RequestRecordRow) -> float:
    """What ``r`` would have cost on ``entry``: its prices on the request's real prompt and
    completion tokens (the same request under the same ``max_tokens``; a model's mean completion
    length from its evaluations ignores that cap and overstated the saving several-fold)."""
    return entry.cost_usd(r.prompt_tokens, r.completion_tokens)


def best_single_model(records: list[RequestRecordRow]) -> str | None:
    """The candidate of highest mean predicted p_correct among those offered to most requests."""
    seen: dict[str, int] = defaultdict(int)
    total: dict[str, float] = defaultdict(float)
    for r in records:
        for m, (p, _) in (r.candidates or {}).items():
            seen[m] += 1
            total[m] += float(p)
    if not seen:
        return None
    most = max(seen.values())
    return max((m for m in seen if seen[m] == most), key=lambda m: (total[m] / most, m))


def savings_block(
    records: list[RequestRecordRow], best: str | None, pool: Pool, idx: OutcomeIndex
) -> dict[str, Any]:
    """Cost per 1k requests and quality of routed traffic against the best single model."""
    routed = [r for r in records if r.candidates]
    out: dict[str, Any] = {"requests": len(records), "routed_requests": len(routed)}
    if not routed or best is None:
        return {**out, "routed_cost_per_1k_usd": None, "best_model_cost_per_1k_usd": None}
    entry = pool.get(best)
    best_costs = [
        best_cost(entry, r) if entry is not None else float(r.candidates[best][1])  # type: ignore[index]
        for r in routed
        if entry is not None or best in (r.candidates or {})
    ]
    routed_cost = 1000 * sum(r.cost_usd for r in routed) / len(routed)
    best_cost_1k = 1000 * sum(best_costs) / max(1, len(best_costs))
    pred_routed = [r.p_correct for r in routed if r.p_correct is not None]
    pred_best = [float(r.candidates[best][0]) for r in routed if best in (r.candidates or {})]  # type: ignore[index]
    pairs = [(idx.score(r.model, r.query_sha256), idx.score(best, r.query_sha256)) for r in routed]
    known = [(a, b) for a, b in pairs if a is not None and b is not None]
    return {
        **out,
        "routed_cost_per_1k_usd": routed_cost,
        "best_model_cost_per_1k_usd": best_cost_1k,
        "saved_per_1k_usd": best_cost_1k - routed_cost,
        "saved_fraction": (1 - routed_cost / best_cost_1k) if best_cost_1k > 0 else None,
        "predicted_quality_routed": _mean([float(p) for p in pred_routed]),
        "predicted_quality_best_model": _mean(pred_best),
        "requests_with_outcomes": len(known),
        "realised_quality_routed": _mean([a for a, _ in known]),
        "realised_quality_best_model": _mean([b for _, b in known]),
    }


class DashboardData:
    """Per-app caches (data-set outcomes, frontiers) behind the dashboard's JSON."""

    def __init__(self) -> None:
        self._outcomes: Outcomes | None = None
        self._frontiers: dict[tuple[int, str, float], dict[str, Any]] = {}

    def outcomes(self, c: GatewayView) -> Outcomes:
        if self._outcomes is None:
            self._outcomes = Outcomes(c.db)
        return self._outcomes

    async def records(self, c: GatewayView, w: Window) -> list[RequestRecordRow]:
        await c.requests_log.flush()
        async with c.db.session() as s:
            rows = (
                (
                    await s.execute(
                        select(RequestRecordRow)
                        .where(RequestRecordRow.created_at >= w.since)
                        .order_by(RequestRecordRow.id.desc())
                        .limit(MAX_RECORDS)
                    )
                )
                .scalars()
                .all()
            )
        return list(reversed(rows))

    # --- savings (also the JSON endpoint)
    async def savings(self, c: GatewayView, w: Window) -> dict[str, Any]:
        records = await self.records(c, w)
        pool = c.engine.pool
        idx = await self.outcomes(c).index(pool_datasets(pool))
        best = best_single_model(records)
        async with c.db.session() as s:
            keys = {k.id: k for k in (await s.execute(select(ApiKeyRow))).scalars().all()}
        by_key: dict[int | None, list[RequestRecordRow]] = defaultdict(list)
        for r in records:
            by_key[r.key_id].append(r)
        per_key = []
        for key_id, rs in sorted(by_key.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)):
            k = keys.get(key_id) if key_id is not None else None
            per_key.append(
                {
                    "key_id": key_id,
                    "name": "admin token" if key_id is None else (k.name if k else f"key {key_id}"),
                    "prefix": k.prefix if k else None,
                    **savings_block(rs, best, pool, idx),
                }
            )
        return {
            "window_hours": w.hours,
            "capped": len(records) >= MAX_RECORDS,
            "since": _iso(w.since),
            "best_model": best,
            "best_model_rule": "highest mean predicted p_correct over the same routed requests; "
            "its cost: its prices on each request's real prompt and completion tokens",
            "overall": savings_block(records, best, pool, idx),
            "per_key": per_key,
        }

    # --- the page's main payload
    async def overview(self, c: GatewayView, w: Window) -> dict[str, Any]:
        pool = c.engine.pool
        records = await self.records(c, w)
        idx = await self.outcomes(c).index(pool_datasets(pool))
        served: dict[str, int] = defaultdict(int)
        for r in records:
            served[r.model] += 1
        return {
            "generated_at": _iso(datetime.now(UTC)),
            "registry_version": pool.version,
            "window_hours": w.hours,
            "capped": len(records) >= MAX_RECORDS,
            "lambda": c.settings.default_lambda,
            "pool": await asyncio.to_thread(self._pool_map, c, served),
            "routers": await self._routers(c),
            "traffic": traffic(records, idx),
            "health": self._health(c, records),
            "budgets": budgets(records),
            "requests": len(records),
        }

    def _pool_map(self, c: GatewayView, served: dict[str, int]) -> list[dict[str, Any]]:
        from training.evaluation.harness import map_2d
        from training.selection import distances, neighbours

        pool = c.engine.pool
        if not len(pool):
            return []
        Z = pool.embeddings()
        if min(Z.shape) >= 2:
            xy = map_2d(Z)
        else:  # one model, or one-dimensional embeddings (the constant fallback embedder)
            xy = np.zeros((len(pool), 2), dtype=np.float32)
            xy[:, 0] = Z[:, 0] if Z.shape[1] else 0.0
        D = distances(Z)
        out = []
        for i, e in enumerate(pool.entries):
            near = neighbours(Z, i, NEIGHBOURS) if len(pool) > 1 else []
            out.append(
                {
                    "name": e.name,
                    "x": float(xy[i, 0]),
                    "y": float(xy[i, 1]),
                    "backend": e.backend.kind,
                    "dataset": e.backend.dataset,
                    "input_per_mtok": e.input_per_mtok,
                    "output_per_mtok": e.output_per_mtok,
                    "num_evaluations": e.num_evaluations,
                    "health": "cooling down" if c.health.cooling(e.name) else "ok",
                    "neighbours": [
                        {"model": pool.entries[j].name, "distance": float(D[i, j])} for j in near
                    ],
                    "requests": served.get(e.name, 0),
                }
            )
        return out

    async def _routers(self, c: GatewayView) -> dict[str, Any]:
        rows = await c.routers.list()
        return {
            "default": c.engine.default_router,
            "available": sorted(c.engine.scorers),
            "artifacts": [
                {
                    "name": r.name,
                    "version": r.version,
                    "kind": r.kind,
                    "active": r.active,
                    "created_at": _iso(r.created_at),
                }
                for r in rows
            ],
        }

    @staticmethod
    def _health(c: GatewayView, records: list[RequestRecordRow]) -> dict[str, Any]:
        errors: dict[str, dict[str, float]] = defaultdict(dict)
        for metric in c.metrics.upstream_errors.collect():
            for s in metric.samples:
                if s.name.endswith("_total"):
                    errors[s.labels["model"]][s.labels["kind"]] = s.value
        fell_back = [r for r in records if r.fallbacks]
        models = []
        for e in c.engine.pool.entries:
            until = c.health.ready_at(e.name)
            left = until - time.monotonic()
            models.append(
                {
                    "model": e.name,
                    "backend": e.backend.kind,
                    "url": e.backend.url,
                    "state": "cooling down" if c.health.cooling(e.name) else "ok",
                    "cooldown_left_s": round(left, 1) if left > 0 else 0.0,
                    "upstream_errors": dict(errors.get(e.name, {})),
                    "served_after_fallback": sum(1 for r in fell_back if r.model == e.name),
                    "fell_back_from": sum(1 for r in fell_back if r.chosen == e.name),
                }
            )
        return {
            "models": models,
            "fallbacks": len(fell_back),
            "recent_fallbacks": [
                {
                    "at": _iso(r.created_at),
                    "chosen": r.chosen,
                    "served": r.model,
                    "hops": r.fallbacks,
                }
                for r in fell_back[-10:]
            ],
        }

    # --- frontier
    async def frontier(self, c: GatewayView, router: str | None) -> dict[str, Any]:
        pool = c.engine.pool
        scorer = c.engine.scorer_for(router)
        lam = float(c.settings.default_lambda)
        key = (pool.version, scorer.name, lam)
        if key not in self._frontiers:
            idx = await self.outcomes(c).index(pool_datasets(pool))
            self._frontiers = {key: await asyncio.to_thread(compute_frontier, c, scorer, idx, lam)}
        return self._frontiers[key]

    # --- federation
    @staticmethod
    def federation(c: GatewayView) -> dict[str, Any]:
        return federation_runs([Path(c.settings.data_dir) / "federation"])


def traffic(records: list[RequestRecordRow], idx: OutcomeIndex) -> dict[str, Any]:
    """Per time bucket and model: requests served, mean predicted p_correct, mean realised score."""
    if not records:
        return {"buckets": [], "bucket_s": 0, "models": {}}
    t0 = records[0].created_at
    t1 = records[-1].created_at
    span = max(60.0, (t1 - t0).total_seconds() + 1)
    steps = [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400]
    size = next((s for s in steps if span / s <= MAX_BUCKETS), steps[-1])
    start = t0.replace(second=0, microsecond=0)
    n = int((t1 - start).total_seconds() // size) + 1
    share: dict[str, list[int]] = {}
    pred: dict[str, list[list[float]]] = {}
    real: dict[str, list[list[float]]] = {}
    for r in records:
        b = int((r.created_at - start).total_seconds() // size)
        share.setdefault(r.model, [0] * n)[b] += 1
        p = pred.setdefault(r.model, [[] for _ in range(n)])
        q = real.setdefault(r.model, [[] for _ in range(n)])
        if r.p_correct is not None:
            p[b].append(float(r.p_correct))
        score = idx.score(r.model, r.query_sha256)
        if score is not None:
            q[b].append(score)
    return {
        "buckets": [_iso(start + timedelta(seconds=i * size)) for i in range(n)],
        "bucket_s": size,
        "models": {
            m: {
                "requests": share[m],
                "predicted": [_mean(x) for x in pred[m]],
                "realised": [_mean(x) for x in real[m]],
                "realised_n": [len(x) for x in real[m]],
            }
            for m in sorted(share)
        },
    }


def budgets(records: list[RequestRecordRow]) -> list[dict[str, Any]]:
    """Budgeted conversations: turns, completion tokens used, the budget and what is left."""
    conv: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.conversation is None or r.budget_total is None:
            continue
        c = conv.setdefault(
            r.conversation,
            {"conversation": r.conversation, "turns": 0, "completion_tokens": 0, "total": 0},
        )
        c["turns"] += 1
        c["completion_tokens"] += r.completion_tokens
        c["total"] = max(c["total"], int(r.budget_total))
        c["left"] = r.budget_left
        c["last_grant"] = r.budget_granted
        c["last_at"] = _iso(r.created_at)
        c["model"] = r.model
    return sorted(conv.values(), key=lambda d: d["last_at"], reverse=True)[:50]


def federation_runs(folders: list[Path]) -> dict[str, Any]:
    """Federated runs from their ``report.json`` (``junction federate simulate --out DIR``)."""
    runs = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("report.json"))[:20]:
            try:
                rep = json.loads(path.read_text())
                cfg = rep["config"]
                rounds = [
                    {"stage": r["stage"], "round": r["round"], "auc": r["auc"]}
                    for r in rep.get("rounds", [])
                    if r.get("auc") is not None
                ]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            auc = rep.get("auc") or {}
            runs.append(
                {
                    "name": str(path.parent.relative_to(folder)),
                    "router": cfg.get("router"),
                    "logs": cfg.get("logs"),
                    "clients": cfg.get("clients"),
                    "rounds_planned": cfg.get("rounds"),
                    "alpha": cfg.get("alpha"),
                    "rounds": rounds,
                    "centralized_auc": auc.get("centralized"),
                    "federated_auc": auc.get("federated"),
                }
            )
    return {"runs": runs, "folders": [str(f) for f in folders]}


def compute_frontier(
    c: GatewayView, scorer: Any, idx: OutcomeIndex, lam_now: float
) -> dict[str, Any]:
    """Realised accuracy and cost per 1k requests of ``argmax p - lambda * cost`` over lambdas.

    Questions: the test split of the pool's data set (held out of LOCUS and router training).
    Models are taken by how many of those questions have a known outcome for them; a model is
    included when it shares at least ``FRONTIER_MIN_QUESTIONS`` with the models before it (so
    the live SmolLM2, measured on 160 test questions, is on the frontier with the replay
    models). At most ``FRONTIER_QUESTIONS`` of the shared questions, drawn with a fixed seed.
    """
    pool = c.engine.pool
    base = next((d for d in idx.datasets), None)
    if base is None:
        return {"router": scorer.name, "points": [], "models": [], "note": "no data set loaded"}
    m = base.matrix
    rows = np.flatnonzero(m.split == "test")
    shas = [_sha(m.queries[i]) for i in rows]
    # Models with the most known outcomes first; each one shrinks the shared question set.
    cand = [e.name for e in pool.entries if scorer.supports(e.name)]
    known = {n: np.array([idx.score(n, s) is not None for s in shas]) for n in cand}
    keep_rows = np.ones(len(rows), dtype=bool)
    names: list[str] = []
    excluded: list[str] = []
    for n in sorted(cand, key=lambda n: (-int(known[n].sum()), n)):
        both = keep_rows & known[n]
        if both.sum() >= FRONTIER_MIN_QUESTIONS:
            keep_rows, names = both, [*names, n]
        else:
            excluded.append(n)
    if not names:
        return {"router": scorer.name, "points": [], "models": [], "excluded": excluded}
    names.sort()
    kept = np.flatnonzero(keep_rows)
    rng = np.random.default_rng(FRONTIER_SEED)
    kept = np.sort(rng.choice(kept, size=min(FRONTIER_QUESTIONS, len(kept)), replace=False))
    sel = rows[kept]
    sel_sha = [shas[i] for i in kept]
    X = m.embeddings[sel]
    P = np.asarray(scorer.p_correct(pool, names, X), dtype=np.float64)  # [Q, M]
    S = np.array([[idx.score(n, s) for n in names] for s in sel_sha], dtype=np.float64)
    ptoks = np.nan_to_num(np.nanmean(m.prompt_tokens[sel], axis=1), nan=0.0)
    C = np.array(
        [[c.engine.expected_cost(pool.get(n), int(t), None) for n in names] for t in ptoks]  # type: ignore[arg-type]
    )
    lams = sorted({0.0, lam_now, *np.geomspace(1.0, 1e6, 49).tolist()})
    points = []
    for lam in lams:
        pick = np.argmax(P - lam * C, axis=1)
        r = np.arange(len(pick))
        points.append(
            {
                "lambda": lam,
                "cost_per_1k_usd": float(1000 * C[r, pick].mean()),
                "accuracy": float(S[r, pick].mean()),
                "predicted": float(P[r, pick].mean()),
                "current": lam == lam_now,
            }
        )
    singles = [
        {
            "model": n,
            "cost_per_1k_usd": float(1000 * C[:, j].mean()),
            "accuracy": float(S[:, j].mean()),
        }
        for j, n in enumerate(names)
    ]
    return {
        "router": scorer.name,
        "questions": len(sel),
        "dataset": m.dataset,
        "points": points,
        "models": singles,
        "excluded": excluded,
        "lambda": lam_now,
        "oracle_accuracy": float(S.max(axis=1).mean()),
    }

"""Measured figures for the cost knob and the default encoder, on the real shipped bundle.

``junction bench routing --out DIR`` starts the gateway's components in-process with the shipped
default pool (no stand-in scorer) and writes ``DIR/routing_report.json``:

- ``cost_knob``: each target (a share of the way from the cheapest reachable mean cost to quality
  mode's, on the validation sample) and each preset is calibrated on the validation questions
  exactly as a request would be (``RoutingEngine.curve``), then every MMLU-Pro *test* question is
  routed with that lambda. Reported: the cost billed per 1,000 requests when the chosen models'
  recorded answers are served (their real completion tokens; what the target counts) and its
  error against the target, the gateway's expected cost (each model's mean completion tokens,
  what decides), and routed accuracy from the recorded scores.
- ``encoder_agreement``: a fixed sample of test questions embedded by torch fp32 and by ONNX int8,
  routed at quality, balanced and cost: how often the two pick the same model, and each one's
  routed accuracy.
- ``latency``: the routing decision (embed, score the whole pool, rank) at concurrency 1 for
  short chat turns and 256-token inputs, every text distinct (no embedding-cache hits): p50/p99.
- ``token_limit`` (only when asked, ``--parts token_limit``): the int8 encoder reading 128 tokens
  of each question against its default 256 (``JUNCTION_ENCODER_MAX_TOKENS``), on every
  validation and test question: same-model rate and routed accuracy per mode, encoding time.
- ``reload`` (only when asked, ``--parts reload``): a registry change rebuilds the LOCUS scorer;
  the time ``reload`` takes and the first decision's scoring after it, as served (the pool's
  evidence built during the reload) and as it was before that (a new scorer stacks the evidence
  on the first request), beside the next decisions', p50 over repeats.

Usage::

    junction bench routing --out reports/routing
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np

from service.routing.calibration import MODE_QUALITY, Curve, choose

SHARES = (0.1, 0.25, 0.5, 0.75)  # targets, as a share of [cheapest, quality mode] on validation


@asynccontextmanager
async def shipped_gateway(
    data_dir: Path, encoder_backend: str | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """(app, components) of a gateway on the shipped bundle, lifespan entered."""
    from service.app import create_app
    from service.settings import Settings

    kw: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": f"sqlite:///{data_dir / 'junction.db'}",
        "health_probe_interval_s": 0,
        "admin_token": "routing-report-admin-token-0123",
    }
    if encoder_backend is not None:
        kw["encoder_backend"] = encoder_backend
    settings = Settings(**kw)
    from service.threads import limit_compute_threads

    limit_compute_threads(settings.compute_threads)  # as `junction serve` does for each worker
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app, app.state.components


def _questions(split: str) -> tuple[list[str], list[str], np.ndarray]:
    import pyarrow.parquet as pq

    from training.data.build import DERIVED

    t = pq.read_table(DERIVED / "mmlu_pro" / "questions.parquet")
    rows = [i for i, s in enumerate(t.column("split").to_pylist()) if s == split]
    ids = [str(t.column("query_id")[i]) for i in rows]
    texts = [str(t.column("query")[i]) for i in rows]
    emb = t.column("embedding").combine_chunks()
    X = np.asarray(emb.values.to_numpy(zero_copy_only=False), dtype=np.float32)
    return ids, texts, X.reshape(len(t), -1)[rows]


def _recorded(ids: list[str], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(score [N, M], completion tokens [N, M]) of each model's real answer; NaN where absent."""
    import pyarrow.parquet as pq

    from training.data.build import DERIVED

    t = pq.read_table(DERIVED / "mmlu_pro" / "evals.parquet").to_pandas()
    t = t[t["query_id"].astype(str).isin(set(ids)) & t["model"].astype(str).isin(set(names))]
    score = np.full((len(ids), len(names)), np.nan)
    cost = np.full((len(ids), len(names)), np.nan)
    row = {q: i for i, q in enumerate(ids)}
    col = {m: j for j, m in enumerate(names)}
    for q, m, s, c in zip(
        t["query_id"], t["model"], t["score"], t["completion_tokens"], strict=True
    ):
        score[row[str(q)], col[str(m)]] = s
        cost[row[str(q)], col[str(m)]] = c
    return score, cost


def _expected(c: Any, names: list[str], texts: list[str]) -> np.ndarray:
    """The gateway's expected cost [N, M]: its prompt-token estimate, each model's mean
    completion tokens."""
    from service.tokens import estimate_tokens

    entries = [c.engine.pool.get(n) for n in names]
    return np.array(
        [[c.engine.expected_cost(e, estimate_tokens(t), None) for e in entries] for t in texts],
        dtype=np.float64,
    )


def _billed(c: Any, names: list[str], texts: list[str], completion: np.ndarray) -> np.ndarray:
    """What the gateway bills [N, M] when the replay backend serves the recorded answer: its
    prompt-token estimate and the answer's real completion tokens."""
    from service.tokens import estimate_tokens

    entries = [c.engine.pool.get(n) for n in names]
    prompt = np.array([estimate_tokens(t) for t in texts], dtype=np.float64)[:, None]
    inp = np.array([e.input_per_mtok for e in entries])[None, :]
    out = np.array([e.output_per_mtok for e in entries])[None, :]
    return np.asarray((prompt * inp + completion * out) / 1e6, dtype=np.float64)


def _routed(
    p: np.ndarray, cost: np.ndarray, lam: float, score: np.ndarray, rec: np.ndarray
) -> dict[str, float]:
    idx = choose(p, cost, lam)
    rows = np.arange(len(idx))
    return {
        "expected_cost_per_1k_usd": float(cost[rows, idx].mean() * 1000),
        "billed_cost_per_1k_usd": float(np.nanmean(rec[rows, idx]) * 1000),
        "accuracy": float(np.nanmean(score[rows, idx])),
        "models_used": int(len(set(idx.tolist()))),
        "top_share": float(np.bincount(idx).max() / len(idx)),
    }


async def _bundle_curve(c: Any) -> tuple[Any, list[str], Curve]:
    """(default scorer, the shipped bundle's model names, their validation routing curve)."""
    engine = c.engine
    pool = engine.pool
    scorer = engine.scorer_for(None)
    names = [n for n in pool.names if (pool.get(n).meta or {}).get("source") == "bundle"]
    curve: Curve = await engine.curve(scorer, pool, names)
    return scorer, names, curve


async def cost_knob(c: Any) -> dict[str, Any]:
    engine = c.engine
    pool = engine.pool
    scorer, names, curve = await _bundle_curve(c)
    ids, texts, X = _questions("test")
    p = engine.predict(scorer, pool, names, X)
    cost = _expected(c, names, texts)
    score, completion = _recorded(ids, names)
    rec = _billed(c, names, texts, completion)
    top, floor = curve.at(0.0)[0], curve.min_cost()
    targets = []
    for share in SHARES:
        target = floor + share * (top - floor)
        lam = curve.lambda_for_cost(target)
        got = _routed(p, cost, lam, score, rec)
        err = got["billed_cost_per_1k_usd"] / (target * 1000) - 1
        expected_err = got["expected_cost_per_1k_usd"] / (target * 1000) - 1
        targets.append(
            {
                "share": share,
                "target_cost_per_1k_usd": target * 1000,
                "lambda": lam,
                "validation_billed_cost_per_1k_usd": curve.at(lam)[0] * 1000,
                "test": got,
                "test_relative_error": err,
                "within_5pct": bool(abs(err) <= 0.05),
                "test_expected_relative_error": expected_err,
            }
        )
    modes = {}
    for mode, keep in MODE_QUALITY.items():
        lam = curve.lambda_for_quality(keep)
        modes[mode] = {
            "keeps_predicted_accuracy_share": keep,
            "lambda": lam,
            "validation": {
                "predicted_cost_per_1k_usd": curve.at(lam)[0] * 1000,
                "predicted_accuracy": curve.at(lam)[1],
            },
            "test": _routed(p, cost, lam, score, rec),
        }
    best = int(np.nanargmax(np.nanmean(score, axis=0)))
    cheapest = int(np.argmin(cost.mean(axis=0)))
    return {
        "pool": names,
        "calibration": {"split": "val", "queries": curve.size},
        "test_queries": len(ids),
        "targets": targets,
        "modes": modes,
        "best_single": {
            "model": names[best],
            "accuracy": float(np.nanmean(score[:, best])),
            "expected_cost_per_1k_usd": float(cost[:, best].mean() * 1000),
        },
        "cheapest_single": {
            "model": names[cheapest],
            "accuracy": float(np.nanmean(score[:, cheapest])),
            "expected_cost_per_1k_usd": float(cost[:, cheapest].mean() * 1000),
        },
    }


async def encoder_agreement(c: Any, n: int = 300, seed: int = 0) -> dict[str, Any]:
    from training.encoder import QueryEncoder

    engine = c.engine
    pool = engine.pool
    scorer, names, curve = await _bundle_curve(c)
    ids, texts, _ = _questions("test")
    pick = np.sort(np.random.default_rng(seed).choice(len(ids), size=n, replace=False))
    ids, texts = [ids[i] for i in pick], [texts[i] for i in pick]
    score, _ = _recorded(ids, names)
    cost = _expected(c, names, texts)
    out: dict[str, Any] = {"queries": n, "seed": seed, "split": "test"}
    X = {}
    for backend in ("torch", "onnx"):
        enc = QueryEncoder(backend=backend)
        t0 = time.perf_counter()
        X[backend] = await asyncio.to_thread(enc.encode, texts)
        out[f"{backend}_encode_s"] = time.perf_counter() - t0
    cos = (X["torch"] * X["onnx"]).sum(1)
    out["cosine"] = {"mean": float(cos.mean()), "min": float(cos.min())}
    for mode, keep in MODE_QUALITY.items():
        lam = curve.lambda_for_quality(keep)
        P = {b: engine.predict(scorer, pool, names, X[b]) for b in X}
        a, b = choose(P["torch"], cost, lam), choose(P["onnx"], cost, lam)
        rows = np.arange(n)
        out[mode] = {
            "lambda": lam,
            "same_model": float((a == b).mean()),
            "accuracy_fp32": float(np.nanmean(score[rows, a])),
            "accuracy_int8": float(np.nanmean(score[rows, b])),
            "max_abs_p_diff": float(np.abs(P["torch"] - P["onnx"]).max()),
        }
    return out


async def token_limit(c: Any, limit: int = 128) -> dict[str, Any]:
    """The default int8 encoder reading at most ``limit`` tokens of each question against its
    default 256, on every validation question (where a default would be chosen) and every test
    question: how often routing picks the same model at quality, balanced and cost, each side's
    routed accuracy, and the encoding time; plus one 256-token input's encoding time on each."""
    from tokenizers import Tokenizer

    from training.bench_encoder import texts_of_length
    from training.encoder import QueryEncoder
    from training.minilm import model_dir

    engine = c.engine
    pool = engine.pool
    scorer, names, curve = await _bundle_curve(c)
    encoders = {256: QueryEncoder(backend="onnx"), limit: QueryEncoder(backend="onnx",
                                                                      max_seq_length=limit)}  # fmt: skip
    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    out: dict[str, Any] = {"limit": limit, "reference": 256, "encoder": "onnx-int8"}
    for split in ("val", "test"):
        ids, texts, _ = _questions(split)
        score, _ = _recorded(ids, names)
        cost = _expected(c, names, texts)
        X, secs = {}, {}
        for n_tok, enc in encoders.items():
            t0 = time.perf_counter()
            X[n_tok] = await asyncio.to_thread(enc.encode, texts)
            secs[n_tok] = time.perf_counter() - t0
        lengths = np.array([len(e.ids) for e in tokenizer.encode_batch(texts)])
        part: dict[str, Any] = {
            "questions": len(texts),
            "share_longer_than_limit": float((lengths > limit).mean()),
            "encode_s": {str(k): v for k, v in secs.items()},
        }
        rows = np.arange(len(texts))
        for mode, keep in MODE_QUALITY.items():
            lam = curve.lambda_for_quality(keep)
            a, b = (choose(engine.predict(scorer, pool, names, X[k]), cost, lam) for k in X)
            part[mode] = {
                "lambda": lam,
                "same_model": float((a == b).mean()),
                "accuracy_256": float(np.nanmean(score[rows, a])),
                f"accuracy_{limit}": float(np.nanmean(score[rows, b])),
            }
        out[split] = part
    longs = texts_of_length(256, 60, seed=1)
    for n_tok, enc in encoders.items():
        enc.encode(longs[:5])
        times = []
        for t in longs[5:]:
            t0 = time.perf_counter()
            enc.encode([t])
            times.append((time.perf_counter() - t0) * 1000)
        out[f"encode_256_token_input_ms_at_{n_tok}"] = _pcts(times)
    return out


async def latency(c: Any, n_short: int = 300, n_long: int = 100) -> dict[str, Any]:
    """The routing decision (``RoutingEngine.decide``: embed, score the whole shipped pool, rank)
    in-process at concurrency 1, every text distinct so the embedding cache never helps."""
    from service.cli.bench import chat_turns
    from service.routing.engine import RouteQuery
    from service.tokens import estimate_tokens
    from training.bench_encoder import texts_of_length

    out: dict[str, Any] = {
        "concurrency": 1,
        "pool_models": len(c.engine.pool),
        "cpus": os.cpu_count(),
        "load_avg_before": os.getloadavg(),
    }
    cases = (
        ("short_chat_turn", chat_turns(n_short + 10, seed=7)),
        ("long_256_tokens", texts_of_length(256, n_long + 10, seed=1)),
    )
    for label, texts in cases:
        wall, embed, score = [], [], []
        for i, text in enumerate(texts):
            q = RouteQuery(text=text, prompt_tokens=estimate_tokens(text))
            t0 = time.perf_counter()
            d = await c.engine.decide(q)
            dt = (time.perf_counter() - t0) * 1000
            if i < 10:  # warm-up
                continue
            wall.append(dt)
            embed.append(d.embed_ms)
            score.append(d.score_ms)
        out[label] = {
            "requests": len(wall),
            "decision_ms": _pcts(wall),
            "embed_ms": _pcts(embed),
            "score_ms": _pcts(score),
        }
    out["load_avg_after"] = os.getloadavg()
    return out


def _pcts(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


async def reload_cost(c: Any, repeats: int = 20) -> dict[str, Any]:
    from service.routing.scoring import LocusScorer

    X = np.asarray(await c.engine.embed(["What is the capital of France?"]))
    times: dict[str, list[float]] = {"reload": [], "first": [], "first_unprepared": [], "next": []}
    for _ in range(repeats):
        t = time.perf_counter()
        await c.reload()
        times["reload"].append(time.perf_counter() - t)
        pool = c.engine.pool
        for key, scorer in (
            ("first", c.engine.scorers["locus"]),
            ("first_unprepared", LocusScorer(c.locus)),
        ):
            t = time.perf_counter()
            scorer.p_correct(pool, pool.names, X)
            times[key].append(time.perf_counter() - t)
        t = time.perf_counter()
        c.engine.scorers["locus"].p_correct(pool, pool.names, X)
        times["next"].append(time.perf_counter() - t)
    out = {f"{k}_p50_ms": float(np.median(v) * 1e3) for k, v in times.items()}
    return {"repeats": repeats, "models": len(c.engine.pool), **out}


async def run(out: Path, *, parts: tuple[str, ...], encoder_backend: str | None) -> dict[str, Any]:
    report: dict[str, Any] = {"bundle": "training/artifacts/default"}
    with tempfile.TemporaryDirectory() as tmp:
        async with shipped_gateway(Path(tmp), encoder_backend) as (app, c):
            report["encoder_backend"] = c.settings.encoder_backend
            if "cost" in parts:
                report["cost_knob"] = await cost_knob(c)
            if "agreement" in parts:
                report["encoder_agreement"] = await encoder_agreement(c)
            if "latency" in parts:
                report["latency"] = await latency(c)
            if "token_limit" in parts:
                report["token_limit"] = await token_limit(c)
            if "reload" in parts:
                report["reload"] = await reload_cost(c)
    out.mkdir(parents=True, exist_ok=True)
    (out / "routing_report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report

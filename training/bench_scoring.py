"""``junction bench scoring``: how fast the routers score a batch of queries against the pool.

Times, for 4,096 queries (by default) against every model of the pool: LOCUS's folded scoring
path (``LocusEmbedder.predict``), the same predictor applied naively to every (query, model) pair
(the baseline the folding is measured against, as a ratio), and the MLP and K-means routers of a
bundle. Then LOCUS-KR as the gateway scores a decision (one query) and a batch of 64: the
vectorised pass over every candidate's stacked evidence (``kr_predict_stacked``, what the gateway
runs) against the model-by-model loop it replaced (``kr_predict`` per candidate, the neighbours of
models on the same queries shared), on the shipped pool and on a pool of 50 onboarded models with
256 evaluations each. Figures are printed (JSON with ``--out``), never asserted.

Usage::

    junction bench scoring --queries 4096
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.minilm import EMBED_DIM


def _time(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99))}


def run_scoring_bench(
    *, queries: int, repeats: int, threads: int, bundle_dir: Path | None = None
) -> dict[str, Any]:
    import torch

    from training.bundle import DEFAULT_BUNDLE, load_bundle
    from training.data import load_matrix
    from training.routers import load_router

    torch.set_num_threads(threads)
    bundle = load_bundle(bundle_dir or DEFAULT_BUNDLE)
    X = np.resize(load_matrix("mmlu_pro").embeddings, (queries, EMBED_DIM)).astype(np.float32)
    Z = bundle.embeddings()
    predictor = bundle.locus.model.predictor

    def naive() -> None:
        with torch.inference_mode():
            zt, xt = torch.as_tensor(Z), torch.as_tensor(X)
            torch.sigmoid(predictor(zt[None, :, :], xt[:, None, :]))

    results: dict[str, Any] = {
        "queries": queries,
        "models": len(Z),
        "threads": threads,
        "machine": platform.processor() or platform.machine(),
        "locus_folded": _time(lambda: bundle.locus.predict(Z, X), repeats),
        "locus_naive": _time(naive, max(3, repeats // 5)),
    }
    for name, path in bundle.routers.items():
        router = load_router(path)

        def route(router: Any = router) -> None:
            router.predict(X)

        results[f"{name}_router"] = _time(route, repeats)
    results["folded_speedup_vs_naive"] = (
        results["locus_naive"]["p50_ms"] / results["locus_folded"]["p50_ms"]
    )
    results["locus_kr"] = _kr_bench(bundle, X, repeats)
    return results


def _kr_bench(bundle: Any, X: np.ndarray, repeats: int) -> dict[str, Any]:
    """LOCUS-KR, stacked against model by model, per pool shape and query batch."""
    import hashlib

    from training.routers.locus_kr import (
        Evidence,
        KRParams,
        StackedEvidence,
        kr_predict,
        kr_predict_stacked,
        sorted_neighbours,
        unit,
    )

    params = KRParams.from_json((bundle.locus.routing or {}).get("params", {}))
    rng = np.random.default_rng(0)
    shipped = [(m.embedding, *bundle.evidence(m.name)) for m in bundle.models]
    onboarded = []
    for j in range(50):
        Xj = unit(rng.normal(size=(256, EMBED_DIM)).astype(np.float32))
        yj = (rng.random(256) < 0.3 + 0.01 * j).astype(np.float32)
        onboarded.append((bundle.locus.embed(Xj, yj), Xj, yj))
    out: dict[str, Any] = {"params": params.to_json()}
    for pool_name, pool in (("shipped", shipped), ("onboarded_50x256", onboarded)):
        Z = np.stack([z for z, _, _ in pool]).astype(np.float32)
        columns = []
        for z, Xm, ym in pool:
            Xm = np.asarray(Xm, dtype=np.float32)
            key = hashlib.sha256(Xm.tobytes()).digest()
            own = bundle.locus.predict(z[None], Xm)[:, 0]
            columns.append((key, Evidence.build(Xm, ym, own)))
        st = StackedEvidence.build(columns, params.alpha_g)
        for batch in (1, 64):
            Q = unit(X[:batch])
            prior = bundle.locus.predict(Z, Q)

            def stacked(Q: np.ndarray = Q, prior: np.ndarray = prior, st: Any = st) -> None:
                kr_predict_stacked(st, prior, params, Q)

            def per_model(
                Q: np.ndarray = Q, prior: np.ndarray = prior, columns: list[Any] = columns
            ) -> None:
                shared: dict[bytes, Any] = {}
                for c, (key, ev) in enumerate(columns):
                    if key not in shared:
                        shared[key] = sorted_neighbours(Q @ ev.X.T, params.k)
                    kr_predict(ev, prior[:, c], params, neighbours=shared[key])

            a, b = _time(stacked, repeats * 5), _time(per_model, repeats * 5)
            out[f"{pool_name}@{batch}"] = {
                "models": len(pool),
                "stacked": a,
                "per_model": b,
                "speedup": b["p50_ms"] / a["p50_ms"],
            }
    return out


def _bench_scoring(args: argparse.Namespace) -> int:
    res = run_scoring_bench(queries=args.queries, repeats=args.repeats, threads=args.threads)
    lines = [
        f"scoring {res['queries']} queries x {res['models']} models, {res['threads']} thread(s)"
    ]
    for key in ("locus_folded", "locus_naive", "mlp_router", "kmeans_router"):
        if key in res:
            t = res[key]
            lines.append(f"  {key:<14} p50 {t['p50_ms']:8.2f} ms   p99 {t['p99_ms']:8.2f} ms")
    lines.append(
        f"  folded LOCUS: {res['folded_speedup_vs_naive']:.1f}x faster than the naive predictor"
    )
    lines.append("LOCUS-KR residual (the gateway's), stacked vs model by model:")
    for key, t in res["locus_kr"].items():
        if key != "params":
            lines.append(
                f"  {key:<20} {t['models']:3d} models  stacked p50 {t['stacked']['p50_ms']:7.3f} ms"
                f"  per-model p50 {t['per_model']['p50_ms']:7.3f} ms  {t['speedup']:.1f}x"
            )
    sys.stdout.write("\n".join(lines) + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


def register_scoring_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.bench_encoder import bench_subparsers

    p = bench_subparsers(subparsers).add_parser(
        "scoring", help="router scoring latency against the pool"
    )
    p.add_argument("--queries", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="", help="write the figures as JSON here")
    p.set_defaults(handler=_bench_scoring)

"""``junction bench scoring``: how fast the routers score a batch of queries against the pool.

Times, for 4,096 queries (by default) against every model of the pool: LOCUS's folded scoring
path (``LocusEmbedder.predict``), the same predictor applied naively to every (query, model) pair
(the baseline the folding is measured against, as a ratio), and the MLP and K-means routers of a
bundle. Figures are printed (JSON with ``--out``), never asserted.

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
    return results


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

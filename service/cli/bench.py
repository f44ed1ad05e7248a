"""``junction bench gateway``: what routing costs, measured in one run (figures printed, not asserted).

Processes: a fast fake vLLM backend, the gateway (``junction serve``, N workers, real encoder and
a LOCUS-sized scorer), optionally the LiteLLM proxy (from its own environment, no routing) in
front of the same backend, and this process as the load generator (aiohttp, uvloop). They share
the machine's cores, as they would on one host.

Measured:

- ``/v1/route`` decision latency p50/p99 at concurrency 1, 16, 64, for typical chat turns
  (~20 tokens, every one distinct so the embedding cache never helps) and 256-token inputs;
- gateway overhead: p50 through the gateway minus p50 calling the backend directly, at
  concurrency 1 (concrete model, and ``junction/auto`` routed) and at 64;
- routed requests per second at 64 concurrent (distinct prompts, and a 256-prompt working set);
- the same through LiteLLM, and the ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.local_servers import free_port

if TYPE_CHECKING:
    import httpx

ADMIN = "bench-admin-token-0123456789"
LITELLM_KEY = "sk-bench-litellm-master-key-0123456789abcdef"
_VERBS = [
    "sort",
    "parse",
    "reverse",
    "merge",
    "validate",
    "cache",
    "serialise",
    "compress",
    "test",
    "profile",
]
_NOUNS = [
    "list",
    "JSON file",
    "linked list",
    "CSV table",
    "date string",
    "tree",
    "graph",
    "HTTP response",
    "matrix",
    "log file",
]
_LANGS = ["Python", "Rust", "Go", "TypeScript", "Java", "C++", "SQL", "Bash"]


@dataclass
class BenchConfig:
    requests: int = 3000
    duration_s: float = 0.0
    workers: int = 2
    litellm: str = ""
    encoder: str = "onnx"
    models: int = 8
    seed: int = 0


def chat_turns(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"How do I {rng.choice(_VERBS)} a {rng.choice(_NOUNS)} in {rng.choice(_LANGS)}? (case {i})"
        for i in range(n)
    ]


def long_inputs(n: int, seed: int) -> list[str]:
    try:
        from training.bench_encoder import texts_of_length

        return list(texts_of_length(256, n, seed=seed))
    except Exception:  # the training extras may be absent in a gateway image
        base = " ".join(chat_turns(40, seed))
        return [f"({i}) " + base[:1100] for i in range(n)]


def _wait_http(url: str, timeout_s: float = 120.0) -> None:
    from training.local_servers import wait_until_up

    wait_until_up(url, timeout_s=timeout_s, name=url)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else float("nan")


async def _load(
    url: str, bodies: list[dict[str, Any]], concurrency: int, headers: dict[str, str]
) -> dict[str, float]:
    import aiohttp

    lat: list[float] = []
    errors = 0
    it = iter(bodies)
    conn = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as session:

        async def worker() -> None:
            nonlocal errors
            for body in it:
                t = time.perf_counter()
                try:
                    async with session.post(
                        url, data=json.dumps(body), headers={"Content-Type": "application/json"}
                    ) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                            continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "n": len(bodies),
        "concurrency": concurrency,
        "p50_ms": _pct(lat, 0.5),
        "p99_ms": _pct(lat, 0.99),
        "rps": len(lat) / wall if wall else 0.0,
        "errors": errors,
    }


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _locus_checkpoint(folder: Path) -> Path:
    """The bundle's LOCUS when shipped; otherwise an untrained one of the same size (speed only)."""
    from training.bundle import DEFAULT_BUNDLE

    if (DEFAULT_BUNDLE / "locus.pt").exists():
        return DEFAULT_BUNDLE / "locus.pt"
    import torch

    from training.locus import LocusConfig, LocusEmbedder
    from training.locus.model import LocusModel

    torch.manual_seed(0)
    return LocusEmbedder(LocusModel(LocusConfig())).save(folder / "locus.pt")


def _register(base: str, backend_url: str, n: int, seed: int) -> list[str]:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    rng = random.Random(seed)
    names = []
    turns = chat_turns(32 * n, seed + 1)
    with admin_client(base, ADMIN, timeout=120) as c:
        for j in range(n):
            name = f"bench-model-{j}"
            evals = [
                {"query": turns[32 * j + i], "score": float(rng.random() < 0.3 + 0.06 * j)}
                for i in range(32)
            ]
            add_model(c, name, backend_url, (0.1 * (j + 1), 0.3 * (j + 1)), evals)
            names.append(name)
    return names


def admin_client(base: str, admin: str, *, timeout: float) -> httpx.Client:
    """An HTTP client on the gateway at ``base`` carrying the admin token."""
    import httpx

    return httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=timeout
    )


def add_model(
    c: httpx.Client,
    name: str,
    url: str,
    pricing: tuple[float, float],
    evaluations: list[dict[str, Any]],
) -> None:
    """``POST /admin/models``: an OpenAI-compatible backend at ``url`` serving ``name``, priced
    (input, output) USD per million tokens, with its evaluations; raises on a refusal."""
    r = c.post(
        "/admin/models",
        json={
            "name": name,
            "backend": {"url": url, "model": name},
            "pricing": {"input_per_mtok": pricing[0], "output_per_mtok": pricing[1]},
            "evaluations": evaluations,
        },
    )
    r.raise_for_status()


def _litellm_proxy(
    python: str, backend_url: str, port: int, workers: int, folder: Path
) -> subprocess.Popen[bytes]:
    cfg = folder / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: bench-model-0\n"
        "    litellm_params:\n"
        "      model: openai/bench-model-0\n"
        f"      api_base: {backend_url}\n"
        "      api_key: none\n"
        f"general_settings:\n  master_key: {LITELLM_KEY}\n  disable_spend_logs: true\n"
        "litellm_settings:\n  drop_params: false\n  telemetry: false\n"
    )
    litellm = str(Path(python).parent / "litellm")
    return subprocess.Popen(
        [
            litellm,
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            str(workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LITELLM_LOG": "ERROR"},
    )


def run_gateway_bench(cfg: BenchConfig) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="junction-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    report: dict[str, Any] = {"config": asdict(cfg)}
    try:
        bport, gport = free_port(), free_port()
        backend = f"http://127.0.0.1:{bport}/v1"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service.cli.fake_vllm",
                    "--port",
                    str(bport),
                    "--reply",
                    "Sure, here is a short answer.",
                ]
            )
        )
        _wait_http(backend + "/models")
        env = {
            **os.environ,
            "JUNCTION_DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
            "JUNCTION_ADMIN_TOKEN": ADMIN,
            "JUNCTION_LOAD_DEFAULT_BUNDLE": "false",
            "JUNCTION_ENCODER_BACKEND": cfg.encoder,
            "JUNCTION_LOCUS_CHECKPOINT": str(_locus_checkpoint(folder)),
            "JUNCTION_HEALTH_PROBE_INTERVAL_S": "0",
            "JUNCTION_MIN_EVALUATIONS": "16",
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service.cli",
                    "serve",
                    "--port",
                    str(gport),
                    "--workers",
                    str(cfg.workers),
                    "--no-smollm2",
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=(folder / "gateway.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        base = f"http://127.0.0.1:{gport}"
        _wait_http(base + "/health/liveness", 300)
        names = _register(base, backend, cfg.models, cfg.seed)
        time.sleep(1.5)  # every worker reloads the registry (poll 0.25 s)
        report["models"] = len(names)
        auth = {"Authorization": f"Bearer {ADMIN}"}
        n = cfg.requests
        short = chat_turns(3 * n + 4000, cfg.seed + 7)
        longs = long_inputs(1200, cfg.seed)
        sq = iter(short)

        def chat(model: str, text: str) -> dict[str, Any]:
            return {
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": 16,
            }

        async def measure() -> dict[str, Any]:
            out: dict[str, Any] = {"route": {}, "overhead": {}, "throughput": {}}
            route = base + "/v1/route"
            # warm-up: encoder paths of every worker, connection pools
            await _load(
                route,
                [{"prompt": t} for t in longs[:32]] + [{"prompt": next(sq)} for _ in range(64)],
                4,
                auth,
            )
            for label, texts in (("chat_turn", None), ("tokens_256", longs)):
                for conc, count in ((1, 200), (16, 800), (64, 1600)):
                    if texts is None:
                        bodies = [{"prompt": next(sq)} for _ in range(count)]
                    else:
                        count = min(count, 400 if conc == 1 else len(texts) - 32)
                        bodies = [
                            {"prompt": texts[32 + i % (len(texts) - 32)]} for i in range(count)
                        ]
                    out["route"][f"{label}@{conc}"] = await _load(route, bodies, conc, auth)
            direct = await _load(
                backend + "/chat/completions", [chat(names[0], "hi") for _ in range(400)], 1, {}
            )
            concrete = await _load(
                base + "/v1/chat/completions",
                [chat(names[0], next(sq)) for _ in range(400)],
                1,
                auth,
            )
            routed = await _load(
                base + "/v1/chat/completions",
                [chat("junction/auto", next(sq)) for _ in range(400)],
                1,
                auth,
            )
            out["overhead"]["direct@1"] = direct
            out["overhead"]["concrete@1"] = concrete
            out["overhead"]["routed@1"] = routed
            direct64 = await _load(
                backend + "/chat/completions", [chat(names[0], "hi") for _ in range(n)], 64, {}
            )
            routed64 = await _load(
                base + "/v1/chat/completions",
                [chat("junction/auto", next(sq)) for _ in range(n)],
                64,
                auth,
            )
            ws = short[-256:]
            cached64 = await _load(
                base + "/v1/chat/completions",
                [chat("junction/auto", ws[i % 256]) for i in range(n)],
                64,
                auth,
            )
            concrete64 = await _load(
                base + "/v1/chat/completions",
                [chat(names[0], next(sq)) for _ in range(n)],
                64,
                auth,
            )
            out["throughput"]["direct@64"] = direct64
            out["throughput"]["concrete@64"] = concrete64
            out["throughput"]["routed_distinct@64"] = routed64
            out["throughput"]["routed_working_set_256@64"] = cached64
            return out

        report.update(_run(measure()))
        ov = report["overhead"]
        report["summary"] = {
            "decision_p50_ms_chat_turn@1": report["route"]["chat_turn@1"]["p50_ms"],
            "overhead_p50_ms_concrete@1": ov["concrete@1"]["p50_ms"] - ov["direct@1"]["p50_ms"],
            "overhead_p50_ms_routed@1": ov["routed@1"]["p50_ms"] - ov["direct@1"]["p50_ms"],
            "overhead_p50_ms_routed@64": report["throughput"]["routed_distinct@64"]["p50_ms"]
            - report["throughput"]["direct@64"]["p50_ms"],
            "routed_rps@64": report["throughput"]["routed_distinct@64"]["rps"],
            "routed_p99_ms@64": report["throughput"]["routed_distinct@64"]["p99_ms"],
        }
        if cfg.litellm:
            lport = free_port()
            procs.append(_litellm_proxy(cfg.litellm, backend, lport, cfg.workers, folder))
            lbase = f"http://127.0.0.1:{lport}"
            _wait_http(lbase + "/health/liveliness", 180)

            async def measure_litellm() -> dict[str, Any]:
                url = lbase + "/v1/chat/completions"
                h = {"Authorization": f"Bearer {LITELLM_KEY}"}
                await _load(url, [chat(names[0], "warm") for _ in range(50)], 4, h)
                one = await _load(url, [chat(names[0], next(sq)) for _ in range(400)], 1, h)
                many = await _load(url, [chat(names[0], next(sq)) for _ in range(n)], 64, h)
                return {"litellm@1": one, "litellm@64": many}

            sys.stdout.write(format_report(report) + "\nnow the same through LiteLLM ...\n")
            sys.stdout.flush()
            lit = _run(measure_litellm())
            report["litellm"] = lit
            lit_over = lit["litellm@1"]["p50_ms"] - ov["direct@1"]["p50_ms"]
            report["summary"]["litellm_overhead_p50_ms@1"] = lit_over
            report["summary"]["litellm_rps@64"] = lit["litellm@64"]["rps"]
            report["summary"]["overhead_ratio_routed_vs_litellm@1"] = (
                report["summary"]["overhead_p50_ms_routed@1"] / lit_over
                if lit_over > 0
                else float("nan")
            )
            report["summary"]["rps_ratio_routed_vs_litellm@64"] = report["summary"][
                "routed_rps@64"
            ] / max(1e-9, lit["litellm@64"]["rps"])
        report["machine"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "workers": cfg.workers,
            "encoder": cfg.encoder,
        }
        return report
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def format_report(report: dict[str, Any]) -> str:
    lines = ["junction bench gateway", ""]
    lines.append(
        f"{'run':34s} {'n':>6s} {'conc':>5s} {'p50 ms':>9s} {'p99 ms':>9s} {'req/s':>9s} {'errors':>7s}"
    )
    for group in ("route", "overhead", "throughput", "litellm"):
        for name, r in report.get(group, {}).items():
            lines.append(
                f"{group + ' ' + name:34s} {r['n']:6d} {r['concurrency']:5d} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} {r['rps']:9.1f} {r['errors']:7d}"
            )
    lines.append("")
    for k, v in report.get("summary", {}).items():
        lines.append(f"{k:44s} {v:10.2f}")
    m = report.get("machine", {})
    lines.append(
        f"\n({m.get('cpus')} CPUs shared by backend, gateway x{m.get('workers')}, load generator; encoder {m.get('encoder')})"
    )
    return "\n".join(lines) + "\n"

"""``junction bench soak``: many streaming clients through three misbehaving backends, for long.

Processes: three vLLM-protocol fake backends (``service.cli.fake_vllm``), the gateway
(``junction serve``, one worker, the shipped LOCUS, a real query encoder), and this process as
the load generator (aiohttp). The backends:

- ``flaky-killed`` (predicted best, so it draws the traffic): SIGKILLed every ``kill_every_s``
  and restarted ``restart_after_s`` later on the same port;
- ``slow`` (predicted worst): ``slow_delay_s`` before its headers, ``slow_chunk_delay_s``
  between chunks, never fails: a healthy candidate exists at every moment;
- ``bursty``: answers 503 for ``burst_len_s`` out of every ``burst_period_s``.

Measured (``SoakReport``): requests, completed streams, failures before the first byte (the
gateway's own failures: with ``slow`` always healthy each one is a failure where a healthy
candidate existed, the figure that must be 0), streams cut after the first byte by a killed
backend (the 200 is out by then: they end with an error event and ``[DONE]``, and cannot fall
back), fallbacks (``x-junction-fallbacks``), p50/p99 latency and time to first token, the
gateway's memory after warm-up and at the end, and its open sockets under load and once idle.
Latency percentiles leave out the warm-up (cold embedding cache, first connections); the
slowest warm-up request is reported on its own.

Usage::

    junction bench soak --duration 600 --clients 64 --out service/results/soak.json
    report = run_soak(SoakConfig(duration_s=20, clients=8, kill_every_s=5))   # the test's
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.cli.bench import _locus_checkpoint, add_model, admin_client, chat_turns
from training.local_servers import free_port, wait_until_up

ADMIN = "soak-admin-token-0123456789"


@dataclass
class SoakConfig:
    """Knobs of one soak run (``junction bench soak --help`` lists them)."""

    duration_s: float = 600.0
    clients: int = 64
    kill_every_s: float = 30.0
    restart_after_s: float = 3.0
    slow_delay_s: float = 0.2
    slow_chunk_delay_s: float = 0.02
    burst_period_s: float = 20.0
    burst_len_s: float = 5.0
    warmup_s: float = 30.0  # memory "at start" is read after this (caches full, pools open)
    max_tokens: int = 16
    prompts: int = 256  # working set of distinct chat turns
    encoder: str = "onnx"
    seed: int = 0


@dataclass
class SoakReport:
    config: dict[str, Any]
    requests: int = 0
    completed: int = 0
    failed_before_first_byte: int = 0
    failed_with_healthy_candidate: int = 0
    cut_mid_stream: int = 0
    cut_mid_stream_by_model: dict[str, int] = field(default_factory=dict)
    client_errors: int = 0
    fallbacks: int = 0
    requests_with_fallback: int = 0
    served_by: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    warmup_max_latency_s: float = 0.0  # the slowest request before the warm-up ended
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    ttft_p50_s: float = 0.0
    ttft_p99_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_growth_pct: float = 0.0
    sockets_start: int = 0
    sockets_end_under_load: int = 0
    sockets_idle_after: int = 0
    wall_s: float = 0.0
    failure_samples: list[str] = field(default_factory=list)


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))]


def _tree(pid: int) -> list[int]:
    """The process and its children (uvicorn may fork a worker)."""
    out = [pid]
    try:
        for line in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out.extend(_tree(int(line)))
    except OSError:
        pass
    return out


def rss_mb(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def open_sockets(pid: int) -> int:
    n = 0
    for p in _tree(pid):
        fd_dir = Path(f"/proc/{p}/fd")
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith("socket:"):
                        n += 1
    return n


def _backend(port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli.fake_vllm", "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _register(base: str, urls: dict[str, str], turns: list[str], seed: int) -> None:
    rng = random.Random(seed)
    # mean scores: flaky-killed best (draws the traffic), then bursty, then slow
    quality = {"flaky-killed": 0.9, "bursty": 0.7, "slow": 0.5}
    with admin_client(base, ADMIN, timeout=300) as c:
        for name, url in urls.items():
            evals = [
                {"query": turns[i % len(turns)], "score": float(rng.random() < quality[name])}
                for i in range(32)
            ]
            add_model(c, name, url, (0.1, 0.3), evals)


async def _clients(
    cfg: SoakConfig, base: str, turns: list[str], rep: SoakReport, stop_at: float
) -> tuple[list[float], list[float]]:
    import aiohttp

    lat: list[float] = []
    ttft: list[float] = []
    measure_from = stop_at - cfg.duration_s + min(cfg.warmup_s, cfg.duration_s / 4)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    connector = aiohttp.TCPConnector(limit=cfg.clients + 8)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(rng: random.Random) -> None:
            body = {
                "model": "junction/auto",
                "messages": [{"role": "user", "content": rng.choice(turns)}],
                "max_tokens": cfg.max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            t0 = time.perf_counter()
            rep.requests += 1
            first: float | None = None
            try:
                async with session.post(
                    base + "/v1/chat/completions", json=body, headers=auth
                ) as resp:
                    key = str(resp.status)
                    rep.statuses[key] = rep.statuses.get(key, 0) + 1
                    if resp.status != 200:
                        rep.failed_before_first_byte += 1
                        rep.failed_with_healthy_candidate += 1  # "slow" never fails
                        if len(rep.failure_samples) < 20:
                            rep.failure_samples.append(f"{resp.status}: {await resp.text()}")
                        return
                    model = resp.headers.get("x-junction-model", "?")
                    fb = int(resp.headers.get("x-junction-fallbacks", "0"))
                    rep.fallbacks += fb
                    rep.requests_with_fallback += fb > 0
                    rep.served_by[model] = rep.served_by.get(model, 0) + 1
                    cut = done = False
                    async for raw in resp.content:
                        line = raw.decode("utf-8", "replace").strip()
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            done = True
                            break
                        obj = json.loads(data)
                        if "error" in obj:
                            cut = True
                        elif first is None and obj.get("choices"):
                            first = time.perf_counter() - t0
                    if cut or not done:
                        rep.cut_mid_stream += 1
                        rep.cut_mid_stream_by_model[model] = (
                            rep.cut_mid_stream_by_model.get(model, 0) + 1
                        )
                        return
                    rep.completed += 1
                    if time.monotonic() >= measure_from:  # percentiles leave out the warm-up
                        lat.append(time.perf_counter() - t0)
                        if first is not None:
                            ttft.append(first)
                    else:
                        rep.warmup_max_latency_s = max(
                            rep.warmup_max_latency_s, time.perf_counter() - t0
                        )
            except (aiohttp.ClientError, TimeoutError) as exc:
                rep.client_errors += 1
                if len(rep.failure_samples) < 20:
                    rep.failure_samples.append(f"client: {type(exc).__name__}: {exc}")

        async def worker(i: int) -> None:
            rng = random.Random(cfg.seed * 1000 + i)
            while time.monotonic() < stop_at:
                await one(rng)

        await asyncio.gather(*(worker(i) for i in range(cfg.clients)))
    return lat, ttft


def run_soak(cfg: SoakConfig, *, log: Any = None) -> dict[str, Any]:
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))  # noqa: T201
    folder = Path(tempfile.mkdtemp(prefix="junction-soak-"))
    ports = {name: free_port() for name in ("flaky-killed", "slow", "bursty")}
    urls = {name: f"http://127.0.0.1:{p}/v1" for name, p in ports.items()}
    backend_args: dict[str, tuple[str, ...]] = {
        "flaky-killed": (),
        "slow": ("--delay", str(cfg.slow_delay_s), "--chunk-delay", str(cfg.slow_chunk_delay_s)),
        "bursty": ("--fail-burst", f"{cfg.burst_period_s},{cfg.burst_len_s}"),
    }
    procs = {name: _backend(ports[name], *backend_args[name]) for name in ports}
    gateway: subprocess.Popen[bytes] | None = None
    rep = SoakReport(config=asdict(cfg))
    gateway_log = (folder / "gateway.log").open("wb")
    try:
        for name, url in urls.items():
            wait_until_up(url + "/models", timeout_s=60, name=name)
        gport = free_port()
        env = {
            **os.environ,
            "JUNCTION_DATABASE_URL": f"sqlite:///{folder / 'soak.db'}",
            "JUNCTION_DATA_DIR": str(folder),
            "JUNCTION_ADMIN_TOKEN": ADMIN,
            "JUNCTION_LOAD_DEFAULT_BUNDLE": "false",
            "JUNCTION_ENCODER_BACKEND": cfg.encoder,
            "JUNCTION_LOCUS_CHECKPOINT": str(_locus_checkpoint(folder)),
            "JUNCTION_MIN_EVALUATIONS": "16",
            "JUNCTION_COOLDOWN_S": "5",
            "JUNCTION_HEALTH_PROBE_INTERVAL_S": "1",
            "JUNCTION_UPSTREAM_READ_TIMEOUT_S": "10",
            "OMP_NUM_THREADS": "1",
        }
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli",
                "serve",
                "--port",
                str(gport),
                "--no-smollm2",
                "--log-level",
                "error",
            ],
            env=env,
            stdout=gateway_log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{gport}"
        wait_until_up(base + "/health/liveness", timeout_s=300, proc=gateway, name="gateway")
        turns = chat_turns(cfg.prompts, cfg.seed + 1)
        _register(base, urls, turns, cfg.seed)
        time.sleep(1.0)
        say(f"soak: {cfg.clients} streaming clients for {cfg.duration_s:.0f} s -> {base}")

        t_start = time.monotonic()
        stop_at = t_start + cfg.duration_s
        gpid = gateway.pid

        async def chaos() -> None:
            next_kill = t_start + cfg.kill_every_s
            while time.monotonic() < stop_at:
                now = time.monotonic()
                if now >= next_kill:
                    procs["flaky-killed"].send_signal(signal.SIGKILL)
                    procs["flaky-killed"].wait()
                    rep.kills += 1
                    await asyncio.sleep(cfg.restart_after_s)
                    procs["flaky-killed"] = _backend(ports["flaky-killed"])
                    next_kill += cfg.kill_every_s
                await asyncio.sleep(0.1)

        async def sample_memory() -> None:
            await asyncio.sleep(min(cfg.warmup_s, cfg.duration_s / 4))
            rep.rss_start_mb = rss_mb(gpid)
            rep.sockets_start = open_sockets(gpid)
            say(f"soak: after warm-up rss {rep.rss_start_mb:.1f} MB")
            last = time.monotonic()
            while time.monotonic() < stop_at - 2:
                await asyncio.sleep(1.0)
                if time.monotonic() - last > 60:
                    last = time.monotonic()
                    done = time.monotonic() - t_start
                    say(
                        f"soak: {done:4.0f}/{cfg.duration_s:.0f} s  requests {rep.requests}  "
                        f"completed {rep.completed}  failed {rep.failed_before_first_byte}  "
                        f"cut {rep.cut_mid_stream}  rss {rss_mb(gpid):.1f} MB"
                    )
            rep.rss_end_mb = rss_mb(gpid)
            rep.sockets_end_under_load = open_sockets(gpid)

        async def main() -> tuple[list[float], list[float]]:
            results = await asyncio.gather(
                _clients(cfg, base, turns, rep, stop_at), chaos(), sample_memory()
            )
            return results[0]

        lat, ttft = asyncio.run(main())
        rep.wall_s = time.monotonic() - t_start
        time.sleep(3.0)  # idle: pooled connections may linger, nothing else should
        rep.sockets_idle_after = open_sockets(gpid)
        rep.latency_p50_s, rep.latency_p99_s = _pct(lat, 0.5), _pct(lat, 0.99)
        rep.ttft_p50_s, rep.ttft_p99_s = _pct(ttft, 0.5), _pct(ttft, 0.99)
        if rep.rss_start_mb:
            rep.rss_growth_pct = 100 * (rep.rss_end_mb - rep.rss_start_mb) / rep.rss_start_mb
        return asdict(rep)
    finally:
        for p in [*procs.values(), *([gateway] if gateway else [])]:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(15)
        gateway_log.close()


def format_soak(report: dict[str, Any]) -> str:
    keys = [
        "requests",
        "completed",
        "failed_with_healthy_candidate",
        "cut_mid_stream",
        "client_errors",
        "fallbacks",
        "requests_with_fallback",
        "kills",
        "latency_p50_s",
        "latency_p99_s",
        "ttft_p50_s",
        "ttft_p99_s",
        "rss_start_mb",
        "rss_end_mb",
        "rss_growth_pct",
        "sockets_start",
        "sockets_end_under_load",
        "sockets_idle_after",
    ]
    return "\n".join(
        f"{k:32s} {report[k]:.3f}" if isinstance(report[k], float) else f"{k:32s} {report[k]}"
        for k in keys
    )

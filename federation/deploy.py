"""Flower's Deployment Engine on loopback, as organisations would run it, in one call.

A SuperLink and one SuperNode per client start as separate processes (each SuperNode with
``data-path`` set to that client's private log: the file is read only by its own SuperNode's
ClientApp); ``flwr run`` submits this repository's Flower app (``[tool.flwr.app]`` in
``pyproject.toml``) with run-config overrides, streams its log and returns when the run ends.
Every process is started in its own session and terminated (then killed) in a ``finally`` block,
children included, so nothing is left behind even when the run fails.

Usage::

    router_path = run_local_deployment(cfg, [Path("a.jsonl"), Path("b.jsonl")], Path("out"))
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from federation.config import FederationConfig
from training.local_servers import NotUp, free_port, wait_until_up

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent


class DeploymentError(RuntimeError):
    """The Deployment Engine run failed; the message names the log to read."""


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_args(values: Mapping[str, object]) -> str:
    """Flower's ``key=value`` override syntax (values in TOML)."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _stop(procs: Sequence[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """SIGTERM each process group, wait, then SIGKILL what is left."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:  # the group may hold children (flwr-serverapp, flwr-clientapp) after its leader
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=5)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], logfile: Path, timeout: float) -> None:
    try:
        wait_until_up(url, timeout_s=timeout, proc=proc, name="SuperLink")
    except NotUp as e:
        raise DeploymentError(f"{e}; see {logfile}") from None


def models_in(paths: Sequence[Path]) -> list[str]:
    """The models evaluated in any of the logs (this orchestrator runs beside every client)."""
    from training.data.schema import read_log

    return sorted({r.model for p in paths for r in read_log(p)})


def run_local_deployment(
    cfg: FederationConfig,
    data: Sequence[Path],
    out: Path,
    *,
    timeout: float = 600.0,
    app_dir: Path = REPO,
) -> Path:
    """Train with SuperLink + SuperNode processes; returns the saved router checkpoint."""
    if not data:
        raise ValueError("give one evaluation log per client")
    if cfg.lr_list:
        raise ValueError(
            "lrs (one federated training per lr, chosen on the server's validation set) is "
            "simulate-only: a deployment trains at lr"
        )
    for p in data:
        if not Path(p).exists():
            raise FileNotFoundError(f"{p}: no such evaluation log")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="flwr-home-"))
    port = free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "junction-local"\n\n[superlink.junction-local]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    procs: list[subprocess.Popen[bytes]] = []
    handles = []

    def start(name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        f = open(logs / f"{name}.log", "wb")  # noqa: SIM115 (closed in finally)
        handles.append(f)
        p = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        procs.append(p)
        return p

    try:
        link = start(
            "superlink",
            [
                _bin("flower-superlink"), "--insecure", "--host", "127.0.0.1",
                "--port", str(port), "--disable-runtime-dependency-installation",
            ],
        )  # fmt: skip
        _wait_healthy(f"http://127.0.0.1:{port}/health", link, logs / "superlink.log", 60)
        for i, path in enumerate(data):
            node_config = config_args({"data-path": str(Path(path).resolve()), "partition-id": i})
            start(
                f"supernode-{i}",
                [
                    _bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                    "--port", str(free_port()), "--node-config", node_config,
                ],
            )  # fmt: skip
        overrides = {**cfg.to_run_config(), "clients": len(data), "out-dir": str(out)}
        if not cfg.model_list:  # the operator named no models: those the logs evaluate
            overrides["models"] = ",".join(models_in(data))
        overrides.pop("server-eval", None)
        cmd = [
            _bin("flwr"), "run", str(app_dir), "junction-local",
            "--run-config", config_args(overrides), "--stream",
        ]  # fmt: skip
        log.info("flwr run with %d SuperNodes on 127.0.0.1:%d", len(data), port)
        with open(logs / "flwr-run.log", "wb") as f:
            try:
                rc = subprocess.run(
                    cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout,
                    start_new_session=True,
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                raise DeploymentError(
                    f"the run did not finish in {timeout:.0f} s; see {logs}"
                ) from None
        router = out / "router.pt"
        # `flwr run --stream` returns when the run ends; the ServerApp's file may land just after.
        deadline = time.monotonic() + 30
        while not router.exists() and time.monotonic() < deadline and rc == 0:
            time.sleep(0.2)
        if rc != 0 or not router.exists():
            raise DeploymentError(f"flwr run exited with {rc} and no {router}; see {logs}")
        return router
    finally:
        _stop(procs)
        for f in handles:
            f.close()

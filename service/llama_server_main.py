"""Entry point of SmolLM2's CPU server: llama-cpp-python's server without extra buffer types.

On CPUs with AMX (Sapphire Rapids and later) llama.cpp repacks the weights into its AMX buffer
type, and the first multi-token batch then dies with SIGSEGV in the AMX matrix multiply
(llama-cpp-python 0.3.36 built natively here; one-token batches run). Turning off the extra
buffer types (the library's ``use_extra_bufts``, what llama.cpp's own ``--no-repack`` flag sets)
keeps the plain CPU kernels; for a 135M model the repacking bought little. The server exposes no
flag for it, so the default model parameters are wrapped before the server module runs.

Usage::

    python -m service.llama_server_main --model ... --port 8081   # same flags as llama_cpp.server
"""

from __future__ import annotations

import runpy
from typing import Any


def _without_extra_buffer_types() -> None:
    import llama_cpp
    import llama_cpp.llama

    default = getattr(llama_cpp, "llama_model_default_params")  # noqa: B009

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    # the bindings are untyped ctypes; setattr keeps mypy from guessing at their attributes
    setattr(llama_cpp, "llama_model_default_params", params)  # noqa: B010
    setattr(getattr(llama_cpp.llama, "llama_cpp"), "llama_model_default_params", params)  # noqa: B009, B010


if __name__ == "__main__":
    _without_extra_buffer_types()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)

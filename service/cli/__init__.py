"""The ``junction`` command line, and the gateway's tooling beside it.

One entry point, one subcommand group per component: each component contributes its subcommands
through a ``register(subparsers)`` function in its own ``cli`` module; heavy imports happen inside
the command handlers, so ``junction --help`` is fast and the gateway image does not need the
training extras.

This package holds what runs *around* the gateway, not inside it: the gateway's own commands
(``commands``: ``junction serve``, ``smollm2 measure``, ``bench ...``), the benchmarks and soak
test they run (``bench``, ``soak``, ``routing_report``), the live-model measurement
(``live_eval``) and the fake vLLM backend that the benchmarks and the tests put behind it
(``fake_vllm``). Nothing in the running gateway imports it; the rest of ``service`` is the
gateway (its SmolLM2 launcher, ``service.llama_server``, included: ``junction serve`` starts it).

Usage::

    junction data build
    junction eval --dataset mmlu_pro --out reports/mmlu_pro
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "training.cli",
    "service.cli.commands",
    "service.cli.onboard_merged",
    "federation.cli",
    "budget_controller.cli",
    "federation.research_cli",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="junction",
        description="Junction: an LLM router with learned model embeddings.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    return handler(args)

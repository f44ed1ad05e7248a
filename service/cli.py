"""The ``junction`` command line: one entry point, one subcommand group per component.

Each component contributes its subcommands through a ``register(subparsers)`` function in its own
``cli`` module; heavy imports happen inside the command handlers, so ``junction --help`` is fast and
the gateway image does not need the training extras.

Usage::

    junction data build
    junction eval --dataset mmlu_pro --out reports/mmlu_pro
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "training.cli",
    "service.commands",
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


if __name__ == "__main__":
    sys.exit(main())

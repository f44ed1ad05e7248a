"""Turn a config dataclass into argparse flags and back: one helper for every offline job.

Each field becomes ``--field-name`` with its type, its default and the ``help`` text from
``field(metadata={"help": ...})``.

Usage::

    add_dataclass_args(parser, LocusConfig)
    cfg = dataclass_from_args(LocusConfig, parser.parse_args())
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_args(
    parser: argparse.ArgumentParser, cls: type[Any], *, prefix: str = ""
) -> None:
    hints = get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        helptext = f.metadata.get("help", "")
        dest = prefix + f.name
        if typ is bool:
            group.add_argument(
                _flag(dest),
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=helptext,
            )
        elif typ in (int, float, str):
            group.add_argument(_flag(dest), dest=dest, type=typ, default=default, help=helptext)
        # Other field types (tuples, nested configs) are set from code, not flags.


def dataclass_from_args(cls: type[T], args: argparse.Namespace, *, prefix: str = "") -> T:
    values = {
        f.name: getattr(args, prefix + f.name)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if hasattr(args, prefix + f.name)
    }
    return cls(**values)

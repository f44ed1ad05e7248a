"""Request bodies as JSON objects, refused with a 400 when no handler downstream could use them.

``json.loads`` accepts things that later blow up far from the parser: ``NaN``/``Infinity`` and
``1e999`` (non-finite floats that poison embeddings and prices), nesting deep enough to raise
``RecursionError`` (in the parser or in any later ``json.dumps``), lone UTF-16 surrogates
(``"\\ud800"``: every ``str.encode`` after that fails), integers wider than any database column,
and NUL characters (PostgreSQL refuses them in text). :func:`parse_json_object` refuses all of
them at the door, in one pass over the parsed value.

Usage::

    body = parse_json_object(await request.body())   # dict, or raises InvalidJSON (400)
"""

from __future__ import annotations

import json
import math
from typing import Any

from service.errors import InvalidJSON

MAX_DEPTH = 64
INT64_MAX = 2**63 - 1


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def bad_string(s: str) -> str | None:
    if s.isascii():
        return "a NUL character" if "\x00" in s else None
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone UTF-16 surrogate (invalid Unicode)"
    return "a NUL character" if "\x00" in s else None


def _bad_scalar(v: Any) -> str | None:
    """Why a leaf value is refused, or None."""
    if isinstance(v, str):
        why = bad_string(v)
        return f"string contains {why}" if why else None
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return None if -INT64_MAX - 1 <= v <= INT64_MAX else "integer out of range (over 64 bits)"
    if isinstance(v, float):
        return None if math.isfinite(v) else "number out of range (not a finite double)"
    return None


def check_value(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``InvalidJSON`` if ``value`` nests deeper than ``max_depth`` or holds a bad leaf."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        v, depth, where = stack.pop()
        if isinstance(v, dict):
            items: Any = v.items()
        elif isinstance(v, list):
            if len(v) > 8 and set(map(type, v)) == {float}:
                # Fast path for vectors (embeddings): C-speed finiteness check of the sum.
                try:
                    if math.isfinite(math.fsum(v)):
                        continue
                except OverflowError:
                    pass
            items = enumerate(v)
        else:
            why = _bad_scalar(v)
            if why:
                raise InvalidJSON(f"{where or 'body'}: {why}", param=where or None)
            continue
        if depth > max_depth:
            raise InvalidJSON(f"JSON nested deeper than {max_depth} levels", param=where or None)
        for k, x in items:
            if isinstance(k, str) and bad_string(k):
                raise InvalidJSON(
                    f"{where or 'body'}: a key is not valid text", param=where or None
                )
            sub = f"{where}.{k}" if where else str(k)
            if isinstance(x, dict | list):
                stack.append((x, depth + 1, sub if len(sub) < 200 else where))
            else:
                why = _bad_scalar(x)
                if why:
                    raise InvalidJSON(f"{sub}: {why}", param=sub)


def loads(raw: bytes | str) -> Any:
    """``json.loads`` that refuses what the module docstring lists (``InvalidJSON``)."""
    try:
        value = json.loads(
            raw,
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        raise InvalidJSON(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None
    check_value(value)
    return value


def parse_json_object(raw: bytes) -> dict[str, Any]:
    body = loads(raw)
    if not isinstance(body, dict):
        raise InvalidJSON("request body must be a JSON object")
    return body

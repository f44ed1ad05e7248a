"""The evaluation-log schema: one row per (query, model) evaluation, in JSONL, CSV or Parquet.

Fields:

=================== ======== =========================================================
field               required meaning
=================== ======== =========================================================
query_id            yes      stable id of the query (string)
query               one of   the query text
embedding           one of   the query embedding (list of floats, same encoder)
model               yes      model name
score               yes      0..1 (1 = correct)
prompt_tokens       yes      prompt length in tokens (int >= 0)
completion_tokens   yes      response length in tokens (int >= 0)
cost_usd            no       USD cost; computed from the price table when absent
category            no       task or subject label
client_id           no       the federated client that logged it
timestamp           no       ISO-8601 string or unix seconds
=================== ======== =========================================================

Malformed rows raise :class:`LogFormatError` naming the file, the line (1-based; for CSV the header
is line 1) and the field. Nothing is dropped silently.

Usage::

    rows = read_log("logs.jsonl")
    write_log(rows, "logs.parquet")
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

REQUIRED = ("query_id", "model", "score", "prompt_tokens", "completion_tokens")
FORMATS = ("jsonl", "csv", "parquet")


class LogFormatError(ValueError):
    """An evaluation-log row that does not follow the schema."""

    def __init__(self, path: str | Path, line: int, field: str, message: str) -> None:
        self.path, self.line, self.field = str(path), line, field
        super().__init__(f"{path}:{line}: field {field!r}: {message}")


@dataclass(frozen=True)
class EvalRow:
    query_id: str
    model: str
    score: float
    prompt_tokens: int
    completion_tokens: int
    query: str | None = None
    embedding: tuple[float, ...] | None = None
    cost_usd: float | None = None
    category: str | None = None
    client_id: str | None = None
    timestamp: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["embedding"] = list(self.embedding) if self.embedding is not None else None
        return d


FIELD_NAMES = tuple(f.name for f in fields(EvalRow))


def _blank(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v == "")


def _num(raw: object, *, path: str | Path, line: int, name: str) -> float:
    if isinstance(raw, bool):
        raise LogFormatError(path, line, name, f"expected a number, got {raw!r}")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LogFormatError(path, line, name, f"expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise LogFormatError(path, line, name, f"expected a finite number, got {raw!r}")
    return value


def _int(raw: object, *, path: str | Path, line: int, name: str) -> int:
    value = _num(raw, path=path, line=line, name=name)
    if value != int(value) or value < 0:
        raise LogFormatError(path, line, name, f"expected a non-negative integer, got {raw!r}")
    return int(value)


def parse_row(raw: Mapping[str, Any], *, path: str | Path = "<input>", line: int = 0) -> EvalRow:
    """Validate one mapping into an :class:`EvalRow` (raises :class:`LogFormatError`)."""
    if not isinstance(raw, Mapping):
        raise LogFormatError(path, line, "<row>", f"expected an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELD_NAMES))
    if unknown:
        raise LogFormatError(
            path, line, unknown[0], f"unknown field (allowed: {', '.join(FIELD_NAMES)})"
        )
    for name in REQUIRED:
        if _blank(raw.get(name)):
            raise LogFormatError(path, line, name, "missing required field")
    query = raw.get("query")
    emb_raw = raw.get("embedding")
    if _blank(query) and _blank(emb_raw):
        raise LogFormatError(path, line, "query", "a row needs 'query' text or an 'embedding'")
    if not _blank(query) and not isinstance(query, str):
        raise LogFormatError(path, line, "query", f"expected a string, got {type(query).__name__}")
    embedding: tuple[float, ...] | None = None
    if not _blank(emb_raw):
        if isinstance(emb_raw, str):
            try:
                emb_raw = json.loads(emb_raw)
            except json.JSONDecodeError:
                raise LogFormatError(
                    path, line, "embedding", "expected a JSON list of floats"
                ) from None
        if not isinstance(emb_raw, (list, tuple)):
            raise LogFormatError(path, line, "embedding", "expected a list of floats")
        embedding = tuple(_num(v, path=path, line=line, name="embedding") for v in emb_raw)
        if not embedding:
            raise LogFormatError(path, line, "embedding", "empty embedding")
    score = _num(raw["score"], path=path, line=line, name="score")
    if not 0.0 <= score <= 1.0:
        raise LogFormatError(
            path, line, "score", f"expected a value in [0, 1], got {raw['score']!r}"
        )
    cost = raw.get("cost_usd")
    cost_usd = None if _blank(cost) else _num(cost, path=path, line=line, name="cost_usd")
    if cost_usd is not None and cost_usd < 0:
        raise LogFormatError(path, line, "cost_usd", f"expected a non-negative cost, got {cost!r}")
    opt = {
        k: (None if _blank(raw.get(k)) else str(raw.get(k)))
        for k in ("category", "client_id", "timestamp")
    }
    return EvalRow(
        query_id=str(raw["query_id"]),
        model=str(raw["model"]),
        score=score,
        prompt_tokens=_int(raw["prompt_tokens"], path=path, line=line, name="prompt_tokens"),
        completion_tokens=_int(
            raw["completion_tokens"], path=path, line=line, name="completion_tokens"
        ),
        query=None if _blank(query) else str(query),
        embedding=embedding,
        cost_usd=cost_usd,
        **opt,
    )


def log_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    fmt = {"jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv", "parquet": "parquet"}.get(suffix)
    if fmt is None:
        raise ValueError(f"{path}: unknown evaluation-log format {suffix!r} (use one of {FORMATS})")
    return fmt


def _iter_raw(path: Path) -> Iterator[tuple[int, Any]]:
    fmt = log_format(path)
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as f:
            for n, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    yield n, json.loads(text)
                except json.JSONDecodeError as e:
                    raise LogFormatError(path, n, "<row>", f"invalid JSON: {e.msg}") from None
    elif fmt == "csv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for n, row in enumerate(reader, start=2):
                if None in row:
                    raise LogFormatError(path, n, "<row>", "more cells than header columns")
                yield n, {k: v for k, v in row.items() if v != ""}
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for n, row in enumerate(table.to_pylist(), start=1):
            yield n, {k: v for k, v in row.items() if v is not None}


def read_log(path: str | Path) -> list[EvalRow]:
    """Read and validate a whole evaluation log (JSONL, CSV or Parquet, by extension)."""
    p = Path(path)
    return [parse_row(raw, path=p, line=n) for n, raw in _iter_raw(p)]


def write_log(rows: Iterable[EvalRow], path: str | Path) -> Path:
    """Write rows in the format named by the file extension; returns the path."""
    p = Path(path)
    fmt = log_format(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    dicts = [r.to_dict() for r in rows]
    if fmt == "jsonl":
        with p.open("w", encoding="utf-8") as f:
            for d in dicts:
                f.write(json.dumps({k: v for k, v in d.items() if v is not None}) + "\n")
    elif fmt == "csv":
        with p.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(FIELD_NAMES))
            writer.writeheader()
            for d in dicts:
                if d["embedding"] is not None:
                    d["embedding"] = json.dumps(d["embedding"])
                writer.writerow({k: ("" if v is None else v) for k, v in d.items()})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                ("query_id", pa.string()),
                ("model", pa.string()),
                ("score", pa.float64()),
                ("prompt_tokens", pa.int64()),
                ("completion_tokens", pa.int64()),
                ("query", pa.string()),
                ("embedding", pa.list_(pa.float32())),
                ("cost_usd", pa.float64()),
                ("category", pa.string()),
                ("client_id", pa.string()),
                ("timestamp", pa.string()),
            ]
        )
        pq.write_table(pa.Table.from_pylist(dicts, schema=schema), p, compression="zstd")
    return p

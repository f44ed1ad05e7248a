"""Reader for RouterBench-format CSVs (one row per prompt, three columns per model).

Columns: ``sample_id``, ``prompt``, ``eval_name``, then for each model ``<model>`` (score 0/1),
``<model>|model_response`` and ``<model>|total_cost`` (USD), and ``oracle_model_to_route_to``.
An empty score cell means the model was not evaluated on that prompt (the cell stays missing, and
is counted); a score or cost that is present but not a number is an error naming file, line and
column. The ``prompt`` cell may be a Python-list literal of strings (RouterBench's export); its
parts are joined.

Usage::

    table = read_routerbench_csv(Path("arc_challenge_test.csv"))
"""

from __future__ import annotations

import ast
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from training.data.schema import LogFormatError

RESPONSE_SUFFIX = "|model_response"
COST_SUFFIX = "|total_cost"


@dataclass(frozen=True)
class RouterBenchRow:
    line: int
    sample_id: str
    prompt: str
    eval_name: str
    scores: dict[str, float]  # only evaluated models
    costs: dict[str, float]
    responses: dict[str, str]


@dataclass(frozen=True)
class RouterBenchTable:
    path: Path
    models: list[str]
    rows: list[RouterBenchRow]
    missing_cells: int


def prompt_text(raw: str) -> str:
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parts = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return raw
        if isinstance(parts, list) and all(isinstance(p, str) for p in parts):
            return "\n".join(parts)
    return raw


def _float(cell: str, *, path: Path, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise LogFormatError(path, line, column, f"expected a number, got {cell!r}") from None
    if not math.isfinite(value):
        raise LogFormatError(path, line, column, f"expected a finite number, got {cell!r}")
    return value


def read_routerbench_csv(path: Path) -> RouterBenchTable:
    csv.field_size_limit(sys.maxsize)  # responses can be long
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for col in ("sample_id", "prompt", "eval_name"):
            if col not in header:
                raise LogFormatError(path, 1, col, "missing column")
        models = [c[: -len(COST_SUFFIX)] for c in header if c.endswith(COST_SUFFIX)]
        for m in models:
            if m not in header:
                raise LogFormatError(path, 1, m, "cost column without a score column")
        rows: list[RouterBenchRow] = []
        missing = 0
        for line, raw in enumerate(reader, start=2):
            scores: dict[str, float] = {}
            costs: dict[str, float] = {}
            responses: dict[str, str] = {}
            for m in models:
                s, c = (raw.get(m) or "").strip(), (raw.get(m + COST_SUFFIX) or "").strip()
                if not s or not c:
                    missing += 1
                    continue
                score = _float(s, path=path, line=line, column=m)
                if not 0.0 <= score <= 1.0:
                    raise LogFormatError(path, line, m, f"expected a score in [0, 1], got {s!r}")
                scores[m] = score
                costs[m] = _float(c, path=path, line=line, column=m + COST_SUFFIX)
                responses[m] = raw.get(m + RESPONSE_SUFFIX) or ""
            if not raw.get("sample_id"):
                raise LogFormatError(path, line, "sample_id", "missing")
            rows.append(
                RouterBenchRow(
                    line=line,
                    sample_id=str(raw["sample_id"]),
                    prompt=prompt_text(raw.get("prompt") or ""),
                    eval_name=str(raw.get("eval_name") or ""),
                    scores=scores,
                    costs=costs,
                    responses=responses,
                )
            )
    return RouterBenchTable(path=path, models=models, rows=rows, missing_cells=missing)

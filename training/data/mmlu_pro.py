"""Reader for the raw MMLU-Pro model outputs (one zip per model, each holding one JSON list).

A record is correct when ``pred == answer``; a missing prediction (``pred`` null, an extraction
failure) counts as wrong. An entry that is not a record (not an object, or missing the fields a
record needs) is skipped and counted; the counts are logged and returned, never dropped silently.

Usage::

    for out in read_mmlu_pro_dir(Path("../shared/data/mmlu_pro")):
        print(out.model, len(out.records), out.skipped)
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_RE = re.compile(r"^model_outputs_(?P<model>.+)_5shots\.zip$")
NEEDED = ("question_id", "question", "options", "answer", "category")
LETTERS = "ABCDEFGHIJKLMNOP"


@dataclass(frozen=True)
class MmluRecord:
    question_id: str
    question: str
    options: tuple[str, ...]
    answer: str
    category: str
    pred: str | None
    response: str

    @property
    def correct(self) -> bool:
        return self.pred is not None and self.pred == self.answer


@dataclass(frozen=True)
class ModelOutputs:
    model: str
    path: Path
    records: list[MmluRecord]
    skipped: int


def query_text(question: str, options: tuple[str, ...] | list[str]) -> str:
    """The text Junction embeds and counts for a multiple-choice question: question + lettered options."""
    lines = [question.strip(), ""]
    lines += [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    return "\n".join(lines)


def model_name(path: Path) -> str:
    m = FILE_RE.match(path.name)
    if m is None:
        raise ValueError(
            f"{path}: not an MMLU-Pro output file (expected model_outputs_<model>_5shots.zip)"
        )
    return m.group("model")


def _record(entry: Any) -> MmluRecord | None:
    if not isinstance(entry, dict) or any(k not in entry for k in NEEDED):
        return None
    options = entry["options"]
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        return None
    response = entry.get("generated_text", entry.get("model_outputs")) or ""
    pred = entry.get("pred")
    return MmluRecord(
        question_id=str(entry["question_id"]),
        question=str(entry["question"]),
        options=tuple(options),
        answer=str(entry["answer"]),
        category=str(entry["category"]),
        pred=None if pred in (None, "") else str(pred),
        response=str(response),
    )


def read_model_outputs(path: Path) -> ModelOutputs:
    """Read one model's zip. Raises ValueError naming the file if it is not a JSON list."""
    with zipfile.ZipFile(path) as zf:
        members = [n for n in zf.namelist() if n.endswith(".json")]
        if len(members) != 1:
            raise ValueError(f"{path}: expected one .json member, found {members}")
        try:
            data = json.loads(zf.read(members[0]))
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}:{members[0]}: invalid JSON at line {e.lineno}: {e.msg}"
            ) from None
    if not isinstance(data, list):
        raise ValueError(
            f"{path}:{members[0]}: expected a JSON list of records, got {type(data).__name__}"
        )
    records: list[MmluRecord] = []
    skipped = 0
    seen: set[str] = set()
    for entry in data:
        rec = _record(entry)
        if rec is None or rec.question_id in seen:
            skipped += 1
            continue
        seen.add(rec.question_id)
        records.append(rec)
    model = model_name(path)
    if skipped:
        log.warning(
            "%s: skipped %d entries that are not complete, unique records", path.name, skipped
        )
    return ModelOutputs(model=model, path=path, records=records, skipped=skipped)


def read_mmlu_pro_dir(folder: Path) -> Iterator[ModelOutputs]:
    files = sorted(folder.glob("model_outputs_*_5shots.zip"))
    if not files:
        raise FileNotFoundError(f"no MMLU-Pro output zips in {folder}")
    for f in files:
        yield read_model_outputs(f)


def gold_questions(shared_data: Path) -> dict[str, tuple[str, str, str]]:
    """query_id -> (query text, gold letter, category), from one model's raw MMLU-Pro outputs."""
    zips = sorted(
        (shared_data / "mmlu_pro").glob("model_outputs_*_5shots.zip"),
        key=lambda p: p.stat().st_size,
    )
    out = read_model_outputs(zips[0])
    return {
        r.question_id: (query_text(r.question, r.options), r.answer, r.category)
        for r in out.records
    }

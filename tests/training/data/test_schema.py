import json

import pytest

from training.data import EvalRow, LogFormatError, read_log, write_log
from training.data.schema import parse_row

GOOD = {
    "query_id": "q1",
    "query": "What is 2 + 2?",
    "model": "m1",
    "score": 1,
    "prompt_tokens": 7,
    "completion_tokens": 3,
}


def test_parse_valid_row_fills_optional_fields():
    row = parse_row(GOOD)
    assert row == EvalRow(
        query_id="q1",
        model="m1",
        score=1.0,
        prompt_tokens=7,
        completion_tokens=3,
        query="What is 2 + 2?",
    )


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"score": 1.5}, "score", "[0, 1]"),
        ({"score": "yes"}, "score", "number"),
        ({"prompt_tokens": -1}, "prompt_tokens", "non-negative integer"),
        ({"completion_tokens": 2.5}, "completion_tokens", "non-negative integer"),
        ({"model": None}, "model", "missing"),
        ({"query": None}, "query", "'query' text or an 'embedding'"),
        ({"embedding": "not json"}, "embedding", "JSON list"),
        ({"embedding": [0.1, "x"]}, "embedding", "number"),
        ({"cost_usd": -0.1}, "cost_usd", "non-negative"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_malformed_rows_name_file_line_and_field(change, field, fragment):
    raw = {**GOOD, **change}
    with pytest.raises(LogFormatError) as err:
        parse_row(raw, path="log.jsonl", line=12)
    assert err.value.field == field
    assert err.value.line == 12
    assert str(err.value).startswith("log.jsonl:12:")
    assert fragment in str(err.value)


def test_embedding_only_row_is_valid():
    raw = {**GOOD, "query": None, "embedding": [0.5, -0.5]}
    assert parse_row(raw).embedding == (0.5, -0.5)


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_round_trip_every_format(tmp_path, ext):
    rows = [
        parse_row(GOOD),
        parse_row(
            {
                **GOOD,
                "query_id": "q2",
                "query": None,
                "embedding": [0.25, 0.5],
                "cost_usd": 0.001,
                "category": "math",
                "client_id": "c7",
            }
        ),
    ]
    path = write_log(rows, tmp_path / f"log.{ext}")
    back = read_log(path)
    assert back == rows


def test_jsonl_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(LogFormatError, match=r"bad.jsonl:2: field '<row>': invalid JSON"):
        read_log(path)


def test_csv_error_counts_the_header_as_line_one(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "query_id,query,model,score,prompt_tokens,completion_tokens\nq1,hi,m,1,3,4\nq2,hi,m,2,3,4\n"
    )
    with pytest.raises(LogFormatError) as err:
        read_log(path)
    assert (err.value.line, err.value.field) == (3, "score")


def test_unknown_extension_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown evaluation-log format"):
        read_log(tmp_path / "log.xlsx")

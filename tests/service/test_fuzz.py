"""Schemathesis over the gateway's own OpenAPI document: no generated request gets a 5xx
(issue 13, finding 3). The document must load and validate first (it had broken references).

Each operation gets ``FUZZ_EXAMPLES`` generated cases (default 25; set ``JUNCTION_FUZZ_EXAMPLES``
for a longer run); the counts per operation go to ``$JUNCTION_FUZZ_REPORT`` when it is set
(the committed report: ``service/results/fuzz.json``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from service.cli.fake_vllm import FakeVLLM  # noqa: E402
from tests.service.helpers import ADMIN, Gateway, make_settings, run_gateway  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("JUNCTION_FUZZ_EXAMPLES", "25"))
COUNTS: Counter[str] = Counter()
STATUSES: dict[str, Counter[int]] = {}


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory) -> Iterator[Gateway]:
    fake = FakeVLLM(model="*")
    fake.start_in_thread()
    with run_gateway(
        make_settings(tmp_path_factory.mktemp("fuzz"), upstream_read_timeout_s=2.0)
    ) as gw:
        assert gw.register("fuzz-model", fake.url, backend_model="fuzz-model").status_code == 201
        yield gw
    fake.stop()
    report = os.environ.get("JUNCTION_FUZZ_REPORT")
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(
            json.dumps(
                {
                    "examples_per_operation": FUZZ_EXAMPLES,
                    "cases": dict(sorted(COUNTS.items())),
                    "total_cases": sum(COUNTS.values()),
                    "statuses": {k: dict(sorted(v.items())) for k, v in sorted(STATUSES.items())},
                    "server_errors": sum(
                        n for v in STATUSES.values() for s, n in v.items() if s >= 500
                    ),
                },
                indent=1,
            )
            + "\n"
        )


def _check(case, key: str) -> None:  # type: ignore[no-untyped-def]
    headers = dict(case.headers or {})
    headers.setdefault("Authorization", ADMIN["Authorization"])
    if case.path == "/v1/evaluations" and case.method == "POST":
        headers.setdefault("Idempotency-Key", "fuzz")
    response = case.call(headers=headers, timeout=30)
    COUNTS[key] += 1
    STATUSES.setdefault(key, Counter())[response.status_code] += 1
    assert response.status_code < 500, (key, response.status_code, response.text[:500])
    if response.status_code >= 400 and response.status_code != 405:
        body = response.json()  # every error is the OpenAI envelope, in JSON
        assert set(body) == {"error"}, body
        assert {"message", "type", "param", "code"} <= set(body["error"]), body


def test_no_server_errors(fuzz_gateway: Gateway) -> None:
    schema = schemathesis.openapi.from_url(fuzz_gateway.url + "/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 15
    for op in operations:
        _fuzz_one(op, f"{op.method.upper()} {op.path}")


# Generated model names almost never name a registered model, so chat and completions would
# stop at the 404; half the cases get one that routes, so generated bodies reach a backend.
_ROUTABLE = ("junction/auto", "fuzz-model")


def _routable(case, pick: int):  # type: ignore[no-untyped-def]
    if isinstance(case.body, dict) and "model" in case.body and pick < 2:
        case.body["model"] = _ROUTABLE[pick]
    return case


def _fuzz_one(op, key: str) -> None:  # type: ignore[no-untyped-def]
    strategy = op.as_strategy()
    if op.path in ("/v1/chat/completions", "/v1/completions"):
        strategy = st.tuples(strategy, st.integers(0, 3)).map(lambda t: _routable(*t))

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases every run
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=strategy)
    def run(case) -> None:  # type: ignore[no-untyped-def]
        _check(case, key)

    run()
    assert COUNTS[key] > 0, key

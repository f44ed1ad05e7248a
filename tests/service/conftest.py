from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli.fake_vllm import FakeVLLM
from tests.service.helpers import Gateway, make_settings, run_gateway


@pytest.fixture
def fake_a() -> Iterator[FakeVLLM]:
    f = FakeVLLM(model="backend-a")
    f.start_in_thread()
    yield f
    f.stop()


@pytest.fixture
def fake_b() -> Iterator[FakeVLLM]:
    f = FakeVLLM(model="backend-b")
    f.start_in_thread()
    yield f
    f.stop()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    with run_gateway(make_settings(tmp_path)) as gw:
        yield gw

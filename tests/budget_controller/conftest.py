from __future__ import annotations

import pytest

from budget_controller.config import EnvConfig
from budget_controller.data import SolverData
from budget_controller.env import ReplayEnv
from budget_controller.train import build_spec


@pytest.fixture(scope="session")
def data() -> SolverData:
    return SolverData.load(EnvConfig())


@pytest.fixture(scope="session")
def env(data: SolverData) -> ReplayEnv:
    return ReplayEnv(data, build_spec(data))

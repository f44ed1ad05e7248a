"""Federation tests run real Flower (Simulation Engine on Ray, Deployment Engine processes) on
small slices of the committed RouterBench data: 4 clients, few rounds, a narrow MLP."""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a Ray FutureWarning

import pytest  # noqa: E402
import torch  # noqa: E402

from federation.config import FederationConfig  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def small(**kw: object) -> FederationConfig:
    base: dict[str, object] = {
        "logs": "routerbench",
        "clients": 4,
        "rounds": 15,
        "participation": 1.0,
        "hidden": 64,
        "k_local": 8,
        "k_global": 12,
    }
    base.update(kw)
    return FederationConfig(**base)  # type: ignore[arg-type]

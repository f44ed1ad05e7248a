"""Federated routers on Flower: the MLP router with per-head FedAvg and the two-pass K-means
router, trained from clients' own evaluation logs (Askin et al., arXiv 2601.22318).

Flower apps: ``federation.server_app:app`` and ``federation.client_app:app`` (configured in
``pyproject.toml`` under ``[tool.flwr.app]``). ``junction federate ...`` runs them in Flower's
Simulation Engine or Deployment Engine and publishes the result to the gateway.

The public surface is the routers a client uses after federation.
"""

import os

# Flower sends anonymous usage telemetry unless told not to, and reads the switch at import time.
# Clients' runs should not phone home, and CI has no network: off unless the caller set it.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from federation.routers import MaskedRouter, PersonalisedRouter, router_auc  # noqa: E402

__all__ = ["MaskedRouter", "PersonalisedRouter", "router_auc"]

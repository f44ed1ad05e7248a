"""Is the server's update the mean of the clients' updates? Ravan: exactly; LoRA FedAvg: no.

Clients run one round of the real local step (:func:`~.digits.local_adapt`) from the initial
adapters; each client's ΔW per layer is read off its uploaded arrays, and the server's ΔW off the
weighted mean of the uploads (what FedAvg sends back).

Usage::

    aggregation_errors(seed=0, clients=4)   # {"ravan": ~1e-8, "lora": ~0.3}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from training.research.federated import Arrays, weighted_mean


def model_deltas(model: Any) -> dict[str, np.ndarray]:
    """ΔW of every adapted layer (Ravan or PEFT LoRA) of ``model``, keyed by module name."""
    from training.research.ravan.layers import ravan_modules

    ravan = ravan_modules(model)
    if ravan:
        return {n: m.delta().detach().numpy().astype(np.float64) for n, m in ravan.items()}
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "lora_A"):
            out[name] = module.get_delta_weight("default").detach().numpy().astype(np.float64)
    return out


def layer_deltas(config: Mapping[str, Any], arrays: Arrays) -> dict[str, np.ndarray]:
    """ΔW of every adapted layer of the digits model with ``arrays`` loaded."""
    from training.research.ravan.digits import adapted_model

    model, _ = adapted_model(config, arrays)
    return model_deltas(model)


def relative_error(
    deltas: Callable[[Arrays], dict[str, np.ndarray]], replies: Sequence[tuple[Arrays, float]]
) -> float:
    """||ΔW_server - mean_k ΔW_k||_F / ||mean_k ΔW_k||_F over all layers, where ΔW_server is read
    off the weighted mean of the uploads (what FedAvg sends back) and ΔW_k off client k's."""
    total = float(sum(w for _, w in replies))
    per_client = [deltas(a) for a, _ in replies]
    mean = {k: sum((w / total) * d[k] for d, (_, w) in zip(per_client, replies, strict=True))
            for k in per_client[0]}  # fmt: skip
    server = deltas(weighted_mean(replies))
    num = sum(float(np.linalg.norm(server[k] - mean[k]) ** 2) for k in mean)
    den = sum(float(np.linalg.norm(mean[k]) ** 2) for k in mean)
    return float(np.sqrt(num / den))


def aggregation_errors(*, seed: int, clients: int, lr: float = 0.01) -> dict[str, float]:
    """Relative error ||ΔW_server - mean_k ΔW_k||_F / ||mean_k ΔW_k||_F, summed over layers."""
    from training.research.ravan.adapters import initial_uploads
    from training.research.ravan.digits import adapted_model, local_adapt

    out = {}
    for method in ("ravan", "lora", "ffa"):
        config = {
            "seed": seed, "method": method, "alpha": 0.1, "lr": lr, "clients": clients,
            "local_steps": 10, "lora_rank": 4, "heads": 4, "pretrain_epochs": 30,
        }  # fmt: skip
        model, spec = adapted_model(config)
        init = initial_uploads(model, spec)
        replies = local_adapt(config, list(range(clients)), init, {"round": 0})
        out[method] = relative_error(partial(layer_deltas, config), replies)
    return out

"""The three federated adapters of the ``ravan`` job on one model, at equal upload per layer.

- ``lora``: PEFT LoRA, rank r; uploads A and B (r (d_in + d_out) per layer); the server averages
  A and B separately (FedIT), so the global update is mean(B) mean(A), not mean(B A).
- ``ffa``: FFA-LoRA, PEFT LoRA with A frozen at its shared seeded init; uploads only B
  (r_F d_out), r_F the largest rank with r_F d_out <= LoRA's upload.
- ``ravan``: :class:`~training.research.ravan.layers.RavanLinear`, h heads of rank r_R, the
  largest with h r_R^2 <= LoRA's upload (and r_R <= min(d_in, d_out)); uploads s_i H_i.

Every adapter's scale is 1 (PEFT ``lora_alpha`` = rank), so the learning rate means the same
thing per parameter; each method's rate is tuned on validation data.

Usage::

    spec = AdapterSpec.matched("ravan", target_dims(model, ("fc1",)), lora_rank=4, heads=4)
    model = attach(model, spec, seed=0)
    up = uploads(model, spec)       # what a client sends
    load(model, spec, up)           # what a client does with the server's aggregate
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from training.research.ravan.layers import inject_ravan, load_ravan, ravan_uploads


def target_dims(
    model: nn.Module, targets: Sequence[str], layers: Sequence[int] | None = None
) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of each target suffix (the first matching ``nn.Linear``; a suffix must have
    one shape wherever it appears)."""
    from training.research.ravan.layers import _layer_index

    dims: dict[str, tuple[int, int]] = {}
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        for t in targets:
            if (name == t or name.endswith("." + t)) and (
                layers is None or _layer_index(name) in set(layers)
            ):
                shape = (m.out_features, m.in_features)
                if dims.setdefault(t, shape) != shape:
                    raise ValueError(f"target {t} has two shapes: {dims[t]} and {shape}")
    missing = set(targets) - set(dims)
    if missing:
        raise ValueError(f"targets not found: {sorted(missing)}")
    return dims


@dataclass(frozen=True)
class AdapterSpec:
    method: str
    dims: dict[str, tuple[int, int]]  # target suffix -> (d_out, d_in)
    ranks: dict[str, int]  # target suffix -> the method's rank
    heads: int = 1
    layers: tuple[int, ...] | None = None

    @classmethod
    def matched(
        cls,
        method: str,
        dims: Mapping[str, tuple[int, int]],
        *,
        lora_rank: int,
        heads: int,
        layers: Sequence[int] | None = None,
    ) -> AdapterSpec:
        ranks = {}
        for t, (d_out, d_in) in dims.items():
            budget = lora_rank * (d_in + d_out)
            if method == "lora":
                ranks[t] = lora_rank
            elif method == "ffa":
                ranks[t] = budget // d_out
            elif method == "ravan":
                ranks[t] = min(math.isqrt(budget // heads), d_out, d_in)
            else:
                raise ValueError(f"unknown method {method!r}")
        return cls(
            method, dict(dims), ranks, heads if method == "ravan" else 1,
            tuple(layers) if layers is not None else None,
        )  # fmt: skip

    def upload_per_layer(self) -> dict[str, int]:
        """Parameters one adapted layer of each target sends per round."""
        out = {}
        for t, (d_out, d_in) in self.dims.items():
            r = self.ranks[t]
            out[t] = {
                "lora": r * (d_in + d_out),
                "ffa": r * d_out,
                "ravan": self.heads * r * r,
            }[self.method]
        return out


def attach(model: nn.Module, spec: AdapterSpec, *, seed: int) -> Any:
    """The model with the method's adapters (frozen base); same ``seed`` -> same frozen parts."""
    import torch

    if spec.method == "ravan":
        inject_ravan(
            model, targets=list(spec.dims), heads=spec.heads, rank=spec.ranks, seed=seed,
            layers=spec.layers,
        )  # fmt: skip
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=max(spec.ranks.values()),
        lora_alpha=max(spec.ranks.values()),
        rank_pattern=dict(spec.ranks),
        alpha_pattern={t: float(r) for t, r in spec.ranks.items()},  # scale alpha / r = 1
        target_modules=list(spec.dims),
        layers_to_transform=list(spec.layers) if spec.layers is not None else None,
        lora_dropout=0.0,
        bias="none",
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with warnings.catch_warnings():  # PEFT calls a transformers 5 name deprecated for v6
            warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*", FutureWarning)
            peft_model = get_peft_model(model, config)
    finally:
        torch.random.set_rng_state(state)
    if spec.method == "ffa":
        for name, p in peft_model.named_parameters():
            if "lora_A" in name:
                p.requires_grad_(False)
    return peft_model


def uploads(model: nn.Module, spec: AdapterSpec) -> dict[str, np.ndarray]:
    """What a client sends after local training."""
    if spec.method == "ravan":
        return ravan_uploads(model)
    return {
        n: p.detach().cpu().float().numpy().copy()
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def load(model: nn.Module, spec: AdapterSpec, arrays: Mapping[str, np.ndarray]) -> None:
    """Put the server's aggregate into the model (Ravan: H <- it, s <- 1)."""
    import torch

    if spec.method == "ravan":
        load_ravan(model, arrays)
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in arrays.items():
            params[n].copy_(torch.from_numpy(np.asarray(v)))


def initial_uploads(model: nn.Module, spec: AdapterSpec) -> dict[str, np.ndarray]:
    """The round-0 global arrays (B = 0 / H = 0: the adapted model equals the base)."""
    return uploads(model, spec)

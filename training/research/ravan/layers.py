"""Ravan's multi-head LoRA layer (NOTES.md (e)) and its injection into any torch model.

:class:`RavanLinear` wraps a frozen ``nn.Linear`` like a PEFT LoRA layer does and adds

    ΔW = scaling * sum_i s_i B_i H_i A_i,   B_i in R^{d_out x r}, H_i in R^{r x r}, A_i in R^{r x d_in}

with B_i, A_i frozen random bases drawn from a seed that every client shares (so the server can
average exactly), H_i trainable (initialised to 0: the adapted model starts as the base) and the
head scales s_i trainable (initialised to 1). A client uploads ``s_i H_i``; the server's mean of
those, put back with s_i = 1, reproduces the mean of the clients' ΔW exactly, because the bases
are common (:func:`ravan_delta`, tested).

Bases: each head's A_i has orthonormal rows and B_i orthonormal columns; when h r <= the
dimension, the heads' subspaces are disjoint (one orthogonal draw split across heads), so the
summed update can reach rank h r (the paper's point: more rank than LoRA for the same upload).

:func:`inject_ravan` replaces chosen ``nn.Linear`` submodules (matched by name suffix, optionally
only in chosen layer indices) in place, the way PEFT injects LoRA; it works on SmolLM2's
``q_proj``/``v_proj`` and on a plain MLP alike.

Usage::

    inject_ravan(model, targets=("q_proj", "v_proj"), heads=4, rank=8, seed=0, layers=[28, 29])
    up = ravan_uploads(model)               # {"<module>.sH": (h, r, r) array} per layer
    load_ravan(model, up)                   # H <- uploaded, s <- 1
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) matrix with orthonormal columns (rows >= cols) or rows (rows < cols)."""
    g = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))[None, :]  # a unique Q (Haar-distributed)
    return q if rows >= cols else q.T


def ravan_bases(
    d_out: int, d_in: int, *, heads: int, rank: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frozen bases B (h, d_out, r) and A (h, r, d_in) from ``seed`` (the same on every client).

    When ``h * r`` fits the dimension, the heads take disjoint blocks of one orthonormal draw."""
    rng = np.random.default_rng([seed, d_out, d_in, heads, rank])

    def stack(dim: int) -> np.ndarray:  # (h, dim, r), orthonormal columns per head
        if heads * rank <= dim:
            q = _orthonormal(rng, dim, heads * rank)  # (dim, h r)
            return np.stack([q[:, i * rank : (i + 1) * rank] for i in range(heads)])
        return np.stack([_orthonormal(rng, dim, min(rank, dim)) for _ in range(heads)])

    b = stack(d_out)  # (h, d_out, r)
    a = stack(d_in).transpose(0, 2, 1)  # (h, r, d_in)
    return b.astype(np.float32), a.astype(np.float32)


class RavanLinear(nn.Module):
    """A frozen ``nn.Linear`` plus Ravan's multi-head update; only ``H`` and ``s`` train."""

    def __init__(
        self, base: nn.Linear, *, heads: int, rank: int, seed: int, scaling: float = 1.0
    ) -> None:
        super().__init__()
        d_out, d_in = base.out_features, base.in_features
        if rank > min(d_out, d_in):
            raise ValueError(f"rank {rank} exceeds min(d_out, d_in) = {min(d_out, d_in)}")
        self.base = base
        self.base.requires_grad_(False)
        self.heads, self.rank, self.scaling = heads, rank, scaling
        b, a = ravan_bases(d_out, d_in, heads=heads, rank=rank, seed=seed)
        dtype = base.weight.dtype
        self.register_buffer("B", torch.from_numpy(b).to(dtype))  # (h, d_out, r)
        self.register_buffer("A", torch.from_numpy(a).to(dtype))  # (h, r, d_in)
        self.H = nn.Parameter(torch.zeros(heads, rank, rank, dtype=dtype))
        self.s = nn.Parameter(torch.ones(heads, dtype=dtype))

    @property
    def in_features(self) -> int:
        return int(self.base.in_features)

    @property
    def out_features(self) -> int:
        return int(self.base.out_features)

    @property
    def weight(self) -> torch.Tensor:  # some callers (e.g. dtype checks) read .weight
        return self.base.weight

    def delta(self) -> torch.Tensor:
        """ΔW (d_out, d_in) = scaling * sum_i s_i B_i H_i A_i."""
        bh = torch.einsum("hdr,hrq->hdq", self.B, self.H * self.s[:, None, None])
        return self.scaling * torch.einsum("hdq,hqk->dk", bh, self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xa = torch.einsum("...k,hrk->...hr", x, self.A)  # (..., h, r)
        xh = torch.einsum("...hr,hqr->...hq", xa, self.H) * self.s[:, None]  # (..., h, r)
        up = torch.einsum("...hq,hdq->...d", xh, self.B)  # (..., d_out)
        out: torch.Tensor = self.base(x) + self.scaling * up
        return out

    def upload(self) -> np.ndarray:
        """What a client sends: s_i H_i, (h, r, r)."""
        with torch.no_grad():
            return (self.H * self.s[:, None, None]).detach().cpu().float().numpy().copy()

    def load(self, sh: np.ndarray) -> None:
        """Take the server's aggregate: H <- it, s <- 1."""
        with torch.no_grad():
            self.H.copy_(torch.from_numpy(np.asarray(sh)).to(self.H.dtype))
            self.s.fill_(1.0)


def _layer_index(name: str) -> int | None:
    m = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


def inject_ravan(
    model: nn.Module,
    *,
    targets: Sequence[str],
    heads: int,
    rank: int | Mapping[str, int],
    seed: int,
    layers: Sequence[int] | None = None,
    scaling: float = 1.0,
) -> list[str]:
    """Replace every ``nn.Linear`` whose name ends in one of ``targets`` (and, with ``layers``,
    whose first numeric path component is one of them) by a :class:`RavanLinear`; freezes every
    other parameter. ``rank`` may map a target suffix to its rank. Returns the replaced names."""
    model.requires_grad_(False)
    chosen = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        suffix = next((t for t in targets if name == t or name.endswith("." + t)), None)
        if suffix is None:
            continue
        if layers is not None and _layer_index(name) not in set(layers):
            continue
        chosen.append((name, suffix, module))
    if not chosen:
        raise ValueError(f"no nn.Linear matches targets {list(targets)} (layers {layers})")
    for name, suffix, module in chosen:
        r = rank[suffix] if isinstance(rank, Mapping) else rank
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer_seed = int(np.random.default_rng([seed, *name.encode()]).integers(2**31))
        setattr(
            parent,
            child,
            RavanLinear(module, heads=heads, rank=r, seed=layer_seed, scaling=scaling),
        )
    return [name for name, _, _ in chosen]


def ravan_modules(model: nn.Module) -> dict[str, RavanLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, RavanLinear)}


def ravan_uploads(model: nn.Module) -> dict[str, np.ndarray]:
    """Every Ravan layer's upload ``s_i H_i`` keyed ``<module name>.sH``."""
    return {f"{n}.sH": m.upload() for n, m in ravan_modules(model).items()}


def load_ravan(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Load the server's aggregate into every Ravan layer (H <- it, s <- 1)."""
    for n, m in ravan_modules(model).items():
        m.load(arrays[f"{n}.sH"])


def ravan_delta(b: np.ndarray, a: np.ndarray, sh: np.ndarray, scaling: float = 1.0) -> np.ndarray:
    """ΔW from bases and s_i H_i, in numpy: scaling * sum_i B_i (s_i H_i) A_i."""
    return scaling * np.einsum("hdr,hrq,hqk->dk", b, sh, a)


def param_count(arrays: Mapping[str, Any]) -> int:
    return int(sum(np.asarray(v).size for v in arrays.values()))

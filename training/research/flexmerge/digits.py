"""The faithful cheap setting: a residual MLP trunk on sklearn's bundled digits, 8 tasks made by
input transforms (NOTES.md (f)), one fine-tuned trunk and head per task.

Blocks (the merge units): the input layer, then each residual block. Heads are per task and never
merged. Everything is seeded; a run takes seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

TASKS = ("identity", "rot90", "flip", "invert", "noise", "shuffle2x2", "shift", "blur")


def transform(name: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Task ``name``'s input transform of images ``x`` [n, 8, 8] in [0, 16]."""
    if name == "identity":
        return x
    if name == "rot90":
        return np.rot90(x, 1, axes=(1, 2))
    if name == "flip":
        return x[:, :, ::-1]
    if name == "invert":
        return 16.0 - x
    if name == "noise":
        return np.clip(x + rng.normal(0, 4.0, x.shape), 0, 16)
    if name == "shuffle2x2":  # a fixed permutation inside every 2x2 patch
        y = x.reshape(-1, 4, 2, 4, 2).copy()
        return y[:, :, ::-1, :, ::-1].reshape(-1, 8, 8)
    if name == "shift":
        return np.roll(x, (2, 2), axis=(1, 2))
    if name == "blur":
        p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
        windows = [p[:, i : i + 8, j : j + 8] for i in range(3) for j in range(3)]
        return np.mean(windows, axis=0)
    raise ValueError(f"unknown digits task {name!r}")


class Trunk(nn.Module):
    """x [n, 64] -> features [n, width]: an input block, then residual MLP blocks."""

    def __init__(self, width: int, res_blocks: int) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(64, width), nn.ReLU())
        self.res = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
            for _ in range(res_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for blk in self.res:
            h = torch.relu(h + blk(h))
        return h

    def blocks(self) -> list[nn.Module]:
        return [self.inp, *self.res]


def block_vector(block: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in block.parameters()])


def set_block(block: nn.Module, vec: torch.Tensor) -> None:
    i = 0
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(vec[i : i + p.numel()].view_as(p))
            i += p.numel()


def data(seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Per task: train/val/test tensors (a 60/20/20 split of the 1,797 digits, fixed per seed)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.target))
    n_tr, n_va = int(0.6 * len(order)), int(0.2 * len(order))
    parts = {"train": order[:n_tr], "val": order[n_tr : n_tr + n_va], "test": order[n_tr + n_va :]}
    images = d.images.astype(np.float64)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for t_i, task in enumerate(TASKS):
        trng = np.random.default_rng([seed, t_i])
        x = transform(task, images, trng).reshape(-1, 64) / 16.0
        out[task] = {}
        for part, idx in parts.items():
            out[task][f"x_{part}"] = torch.tensor(x[idx], dtype=torch.float32)
            out[task][f"y_{part}"] = torch.tensor(d.target[idx], dtype=torch.long)
    return out


def _fit(
    trunk: Trunk, head: nn.Linear, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(head(trunk(x[idx])), y[idx]).backward()
            opt.step()


def accuracy(trunk: Trunk, head: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((head(trunk(x)).argmax(1) == y).float().mean())


def finetune_all(
    seed: int, *, width: int, res_blocks: int, pretrain_epochs: int, finetune_epochs: int
) -> tuple[Trunk, list[Trunk], list[nn.Linear], dict[str, dict[str, torch.Tensor]]]:
    """Pre-train a trunk on plain digits, then fine-tune a copy (and a head) per task."""
    import copy

    torch.manual_seed(seed)
    ds = data(seed)
    base, head0 = Trunk(width, res_blocks), nn.Linear(width, 10)
    _fit(base, head0, ds["identity"]["x_train"], ds["identity"]["y_train"],
         epochs=pretrain_epochs, seed=seed)  # fmt: skip
    trunks, heads = [], []
    for t_i, task in enumerate(TASKS):
        tr, hd = copy.deepcopy(base), copy.deepcopy(head0)
        _fit(tr, hd, ds[task]["x_train"], ds[task]["y_train"], epochs=finetune_epochs,
             seed=seed * 100 + t_i)  # fmt: skip
        trunks.append(tr)
        heads.append(hd)
    return base, trunks, heads, ds


def evaluator(
    base: Trunk, heads: list[nn.Linear], ds: dict[str, dict[str, torch.Tensor]], part: str
) -> Callable[[list[list[torch.Tensor]]], list[float]]:
    """Accuracy per task of the trunk ``base + vectors[task][block]`` with the task's head."""
    import copy

    base_vecs = [block_vector(b) for b in base.blocks()]

    def run(vectors: list[list[torch.Tensor]]) -> list[float]:
        accs = []
        for t_i, task in enumerate(TASKS):
            tr = copy.deepcopy(base)
            for blk, b0, v in zip(tr.blocks(), base_vecs, vectors[t_i], strict=True):
                set_block(blk, b0 + v)
            accs.append(accuracy(tr, heads[t_i], ds[task][f"x_{part}"], ds[task][f"y_{part}"]))
        return accs

    return run

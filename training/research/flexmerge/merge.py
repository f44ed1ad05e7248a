"""FlexMerge's core: data-free merge operators and the greedy block-wise merge with its size.

Task vectors are given per block as flat tensors: ``tau[block][task]`` (a block is a set of
parameters that is merged as a unit, e.g. one transformer layer). Every task starts as its own
group in every block. One greedy step looks, in every block, for the pair of groups whose merged
group task vectors have the largest cosine similarity, takes the globally best (block, pair),
unites the pair and recomputes the group's vector from the original task vectors of all its
members with the chosen operator. Each step removes one stored copy of that block, so the
deployed size falls from M x (nothing merged) to 1 x (every block one group) in
``(M - 1) * n_blocks`` steps.

Size accounting (the paper's "deployed size"): with ``|b|`` the parameter count of block ``b`` and
``g_b`` its number of groups, the stored mergeable parameters are ``sum_b g_b |b|`` and the size
is ``sum_b g_b |b| / sum_b |b|`` (1 x = one merged model, M x = all M models). Parameters that
are never merged (an embedding shared by all tasks, per-task heads) are reported apart.

Operators (a group of one keeps its task vector unchanged):
- ``avg``: the mean of the members' task vectors;
- ``ta`` (task arithmetic, Ilharco et al. 2023): ``lam * sum``;
- ``ties`` (Yadav et al. 2023): trim each vector to its top ``k`` fraction by magnitude, elect
  the sign of the summed trimmed vectors per coordinate, average the trimmed values that agree
  with the elected sign (the disjoint mean), times ``lam``.

Usage::

    fm = FlexMerge(tau, method="ties", lam=1.0, k=0.2)
    while fm.size() > 2.0:
        fm.step()
    vectors = fm.task_vector(task=3)    # block -> merged vector used by task 3
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

METHODS = ("avg", "ta", "ties")


def trim_top_k(v: torch.Tensor, k: float) -> torch.Tensor:
    """Keep the ``ceil(k * n)`` largest-magnitude entries of ``v`` (ties by index), zero the rest."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    n = v.numel()
    keep = max(1, math.ceil(k * n - 1e-9))  # 0.3 * 10 is 3.0000000000000004 in floats
    if keep >= n:
        return v.clone()
    idx = torch.topk(v.abs(), keep, sorted=False).indices
    out = torch.zeros_like(v)
    out[idx] = v[idx]
    return out


def ties_merge(vectors: Sequence[torch.Tensor], *, k: float, lam: float) -> torch.Tensor:
    """TIES-Merging: trim, elect sign, disjoint mean, scale."""
    trimmed = torch.stack([trim_top_k(v, k) for v in vectors])  # [n, d]
    sign = torch.sign(trimmed.sum(0))  # [d]; 0 where the trimmed values cancel
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    count = agree.sum(0)
    total = torch.where(agree, trimmed, torch.zeros_like(trimmed)).sum(0)
    return lam * torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def merge_vectors(
    vectors: Sequence[torch.Tensor], *, method: str, lam: float = 1.0, k: float = 0.2
) -> torch.Tensor:
    """One group's merged task vector from its members' task vectors."""
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; known: {', '.join(METHODS)}")
    if len(vectors) == 1:
        return vectors[0]
    if method == "avg":
        return torch.stack(list(vectors)).mean(0)
    if method == "ta":
        return lam * torch.stack(list(vectors)).sum(0)
    return ties_merge(vectors, k=k, lam=lam)


def size_x(groups_per_block: Sequence[int], block_sizes: Sequence[int]) -> float:
    """Deployed size in units of one model's mergeable parameters."""
    return sum(g * s for g, s in zip(groups_per_block, block_sizes, strict=True)) / sum(block_sizes)


class FlexMerge:
    """Greedy block-wise progressive merging over ``tau[block][task]`` (flat tensors)."""

    def __init__(
        self,
        tau: Sequence[Sequence[torch.Tensor]],
        *,
        method: str,
        lam: float = 1.0,
        k: float = 0.2,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown merge method {method!r}; known: {', '.join(METHODS)}")
        self.tau = [list(b) for b in tau]
        self.m = len(self.tau[0])
        if any(len(b) != self.m for b in self.tau):
            raise ValueError("every block needs one task vector per task")
        self.method, self.lam, self.k = method, lam, k
        self.block_sizes = [int(b[0].numel()) for b in self.tau]
        # groups[b]: list of (members, vector); a task's group in block b is found by membership
        self.groups: list[list[tuple[tuple[int, ...], torch.Tensor]]] = [
            [((t,), v) for t, v in enumerate(b)] for b in self.tau
        ]
        self.history: list[tuple[int, tuple[int, ...], float]] = []

    def steps_left(self) -> int:
        return sum(len(g) - 1 for g in self.groups)

    def groups_per_block(self) -> list[int]:
        return [len(g) for g in self.groups]

    def size(self) -> float:
        return size_x(self.groups_per_block(), self.block_sizes)

    def stored_params(self) -> int:
        """Mergeable parameters stored: one copy of each block per group."""
        return sum(len(g) * s for g, s in zip(self.groups, self.block_sizes, strict=True))

    def _best_pair(self, b: int) -> tuple[float, int, int]:
        groups = self.groups[b]
        vecs = torch.stack([v for _, v in groups])
        unit = vecs / vecs.norm(dim=1, keepdim=True).clamp(min=1e-12)
        sim = unit @ unit.T
        sim.fill_diagonal_(-float("inf"))
        flat = int(torch.argmax(sim))
        i, j = divmod(flat, len(groups))
        return float(sim[i, j]), min(i, j), max(i, j)

    def step(self) -> tuple[int, tuple[int, ...], float]:
        """Merge the most similar pair of groups over all blocks; returns (block, members, cos)."""
        best: tuple[float, int, int, int] | None = None
        for b, groups in enumerate(self.groups):
            if len(groups) < 2:
                continue
            s, i, j = self._best_pair(b)
            if best is None or s > best[0]:
                best = (s, b, i, j)
        if best is None:
            raise RuntimeError("everything is merged already (size 1 x)")
        s, b, i, j = best
        members = tuple(sorted(self.groups[b][i][0] + self.groups[b][j][0]))
        vec = merge_vectors(
            [self.tau[b][t] for t in members], method=self.method, lam=self.lam, k=self.k
        )
        self.groups[b] = [g for n, g in enumerate(self.groups[b]) if n not in (i, j)]
        self.groups[b].append((members, vec))
        self.history.append((b, members, s))
        return b, members, s

    def task_vector(self, task: int) -> list[torch.Tensor]:
        """Per block, the (merged) vector that ``task`` uses now."""
        return [next(v for mem, v in groups if task in mem) for groups in self.groups]

    def variants(self) -> list[tuple[int, ...]]:
        """Tasks that share every block's vector form one deployable model: the distinct ones."""
        seen: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for t in range(self.m):
            key = tuple(next(mem for mem, _ in groups if t in mem) for groups in self.groups)
            seen.setdefault(key, []).append(t)
        return [tuple(ts) for ts in seen.values()]


def merge_schedule(n_steps: int, points: int) -> list[int]:
    """Step counts (0..n_steps, both ends included) at which to evaluate, about evenly spaced."""
    if points < 2:
        raise ValueError("need at least two evaluation points")
    return sorted({round(i * n_steps / (points - 1)) for i in range(points)})
